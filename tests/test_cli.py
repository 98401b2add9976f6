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
