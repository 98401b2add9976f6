"""The toy world's true reward as a verl reward function (needs nothing but minirlhf).

verl scores each answer with ``compute_score(data_source, solution_str, ground_truth, extra_info)``.
Point verl at this file for the data that ``minirlhf export --format verl --out DIR`` writes::

    REWARD="$(python -c 'import minirlhf.integrations.verl as m; print(m.__file__)')"
    python -m verl.trainer.main_ppo \\
        data.train_files=DIR/train.parquet data.val_files=DIR/test.parquet \\
        custom_reward_function.path="$REWARD" \\
        custom_reward_function.name=compute_score ...
"""

from __future__ import annotations

from minirlhf import world
from minirlhf.export import DATA_SOURCE


def compute_score(data_source: str, solution_str: str, ground_truth: str,
                  extra_info: dict | None = None) -> float:
    """:func:`minirlhf.world.true_reward` of the answer ``solution_str`` to the row's question
    (``extra_info["question"]``, or rebuilt from ``extra_info["country"]``): +1 for the concise,
    correct capital, down to -2 for malformed text. Raises ValueError for a row that is not from
    ``minirlhf export`` (another ``data_source``, or a ``ground_truth`` that is not the capital)."""
    if data_source != DATA_SOURCE:
        raise ValueError(f"compute_score scores the toy world's rows (data_source {DATA_SOURCE!r}), "
                         f"got {data_source!r}.")
    extra_info = extra_info or {}
    question = extra_info.get("question") or world.make_prompt(extra_info.get("country", ""))
    country = world.country_of_prompt(question)
    if ground_truth != world.CAPITAL_OF[country]:
        raise ValueError(f"ground_truth {ground_truth!r} is not the capital of {country}: is the row from "
                         "`minirlhf export --format verl`?")
    return world.true_reward(question, solution_str)
