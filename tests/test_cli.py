"""The README's Quickstart and .ci/run agree; the command line refuses bad input."""

import re
from pathlib import Path

import pytest

from minirlhf.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\s+```bash\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_quickstart_has_three_commands_and_ci_runs_the_setup_and_test_ones():
    setup, demo, tests = _quickstart_commands()
    assert demo == "minirlhf demo"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert setup in ci_lines and tests in ci_lines
    assert ci_lines.index(setup) < ci_lines.index(tests)


def test_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train-everything"])
    assert "invalid choice" in capsys.readouterr().err


def test_demo_quick_writes_a_report_with_every_figure_and_number(tmp_path, capsys):
    import json

    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(figures) >= 5
    for name in figures:  # every figure is shown or linked
        assert f"]({name})" in report, f"{name} is not in the report"
    shown = [name for name in figures if "![" in report.split(f"]({name})")[0].rsplit("\n", 1)[-1]]
    assert 3 <= len(shown) <= 6                                   # at most 6 in the main flow
    assert html.count("data:image/png;base64,") == len(shown)     # the page carries its images
    for stage in ("sft", "reward_model", "ppo", "dpo", "comparison"):
        assert stage in metrics
    for heading in ("1. The base model", "What the raters preferred", "PPO and DPO on France",
                    "How close each came to the exact optimum", "Read next"):
        assert heading in report and heading in html
    for stage in ("1/5 SFT", "2/5 reward model", "3/5 PPO", "4/5 DPO", "5/5"):  # one line a stage
        assert f"[{stage}" in printed
    assert "report.html" in printed.splitlines()[-1]
    methods = [row["method"] for row in metrics["comparison"]["table"]]
    assert "PPO" in methods and "DPO" in methods
    assert 0 <= metrics["dpo"]["coverage"] <= 1 and metrics["dpo"]["rater_labels"] > 0
    assert (tmp_path / "sft-model" / "model.safetensors").is_file()


def test_the_report_states_the_reward_models_order_as_its_scores_give_it():
    from minirlhf.pipeline import learned_order

    right = learned_order({"reward_correct": 1.0, "reward_hedge": 0.2, "reward_berlin": -1.0})
    assert right.startswith("Paris (+1.00) > the hedge (+0.20) > Berlin (-1.00)")
    assert "the true order" in right
    wrong = learned_order({"reward_correct": -2.29, "reward_hedge": -1.46, "reward_berlin": -3.48})
    assert wrong.startswith("the hedge (-1.46) > Paris (-2.29) > Berlin (-3.48)")
    assert "not the true order" in wrong
