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


def test_demo_quick_writes_a_report_with_every_figure_and_number(tmp_path):
    import json

    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(figures) >= 5
    for name in figures:
        assert f"]({name})" in report, f"{name} is not in the report"
    for stage in ("sft", "reward_model", "ppo", "dpo", "comparison"):
        assert stage in metrics and f"## {stage}" in report
    for name in ("dpo_training.png", "dpo_token_log_ratios.png", "comparison_frontier.png"):
        assert name in figures
    assert metrics["comparison"]["table_markdown"] in report
    methods = [row["method"] for row in metrics["comparison"]["table"]]
    assert "PPO" in methods and "DPO" in methods
    assert 0 <= metrics["dpo"]["coverage"] <= 1 and metrics["dpo"]["rater_labels"] > 0
    assert (tmp_path / "sft-model" / "model.safetensors").is_file()
