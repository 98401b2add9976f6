"""Results of long runs that notebooks 05, 06 and 07 read instead of training for minutes or hours:
copies of files in ``benchmarks/results/``, shipped with the package so that the notebooks also run
outside a checkout.

``python benchmarks/frontier.py --notebook-cache`` and ``python benchmarks/label_budget.py
--notebook-cache`` write the first two; ``python benchmarks/grpo.py --notebook-cache`` writes
``grpo_long_runs``, every ``grpo*.json`` results file in one, by file name; ``benchmarks/scoreboard.py``
writes ``scoreboard`` whenever it writes the stored results file. A test checks that each copy equals
its results files.
"""

from __future__ import annotations

import json
from importlib import resources

NAMES = ("frontier", "label_budget", "grpo_long_runs", "scoreboard")


def load(name: str) -> dict:
    """The cached run ``name`` (one of ``NAMES``), as the dict its benchmark wrote."""
    if name not in NAMES:
        raise ValueError(f"No cached run named {name!r}; the cached runs are {', '.join(NAMES)}.")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())
