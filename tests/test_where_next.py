"""docs/where_next.md is a tested page: every command it lists exists with the options it names, the
OpenRLHF and verl commands name columns and functions that `minirlhf export` provides, and (with the
`trl` extra) its Python example runs and logs the exact attainment."""

import importlib
import re
import shlex
from pathlib import Path

import pytest

from minirlhf.cli import main
from minirlhf.export import OPENRLHF_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "where_next.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE, re.S)


def _commands() -> list[list[str]]:
    return [shlex.split(line) for block in _blocks("bash") for line in block.splitlines() if line.strip()]


def _options(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if w.startswith("--")]


def test_the_page_lists_the_examples_the_export_and_the_side_by_side_benchmark():
    scripts = {w for words in _commands() for w in words if w.endswith(".py")}
    assert {"examples/trl_dpo.py", "examples/trl_grpo.py", "benchmarks/trl_side_by_side.py"} <= scripts
    formats = {words[3] for words in _commands() if words[:2] == ["minirlhf", "export"]}
    assert formats == {"trl", "openrlhf", "verl"}


def test_every_script_it_runs_exists_and_takes_the_options_it_names():
    for words in _commands():
        scripts = [w for w in words if w.startswith(("examples/", "benchmarks/")) and w.endswith(".py")]
        if not scripts:
            continue
        source = (ROOT / scripts[0]).read_text(encoding="utf-8")
        for option in _options(words[words.index(scripts[0]):]):
            assert f'"{option}"' in source, f"{scripts[0]} has no option {option}"


def test_every_minirlhf_command_it_runs_exists_with_its_options(capsys):
    for words in _commands():
        if words[0] != "minirlhf":
            continue
        with pytest.raises(SystemExit) as exit_:
            main([words[1], "--help"])
        assert exit_.value.code == 0
        usage = capsys.readouterr().out
        assert all(option in usage for option in _options(words)), words


def test_the_openrlhf_and_verl_commands_name_what_the_export_writes():
    columns = {name for names in OPENRLHF_COLUMNS.values() for name in names.values()}
    keys = [(w, words[i + 1]) for words in _commands() for i, w in enumerate(words) if w.endswith("_key")]
    assert len(keys) >= 7 and all(value in columns for _, value in keys), keys
    path, name = [w.split("=", 1)[1] for words in _commands() for w in words
                  if w.startswith("custom_reward_function")]
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, name))


def test_its_python_example_runs_and_logs_the_exact_attainment(tmp_path, monkeypatch, capsys):
    pytest.importorskip("trl")
    (example,) = [block for block in _blocks("python") if "ExactEvaluationCallback" in block]
    monkeypatch.chdir(tmp_path)  # TRL's output_dir goes there
    exec(compile(example, "where_next.md", "exec"), {})
    assert -1 < float(capsys.readouterr().out.strip().splitlines()[-1]) < 1
