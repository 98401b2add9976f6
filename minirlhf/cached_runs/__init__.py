"""Results of long runs that notebooks 05 and 07 read instead of training for minutes: copies of files
in ``benchmarks/results/``, shipped with the package so that the notebooks also run outside a checkout.

``python benchmarks/frontier.py --notebook-cache`` and ``python benchmarks/label_budget.py
--notebook-cache`` write them, and ``benchmarks/scoreboard.py`` whenever it writes the stored results
file; a test checks that each copy equals its results file.
"""

from __future__ import annotations

import json
from importlib import resources

NAMES = ("frontier", "label_budget", "scoreboard")


def load(name: str) -> dict:
    """The cached run ``name`` (one of ``NAMES``), as the dict its benchmark wrote."""
    if name not in NAMES:
        raise ValueError(f"No cached run named {name!r}; the cached runs are {', '.join(NAMES)}.")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())
