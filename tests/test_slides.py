"""The slides of the 90-minute class build from the notebooks' stored outputs, one command."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _make_slides():
    spec = importlib.util.spec_from_file_location("make_slides", ROOT / "scripts" / "make_slides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_class_slides_build_with_every_planned_section_and_its_figures(tmp_path, capsys):
    pytest.importorskip("nbconvert")
    make = _make_slides()
    assert make.main(["--out", str(tmp_path)]) == 0
    html = (tmp_path / "class_90min.slides.html").read_text(encoding="utf-8")
    assert "reveal" in html and html.count("<section") > 20
    assert html.count("data:image/png") >= 8  # the stored figures, inside the file
    for name, wanted, _ in make.CLASS_PLAN:
        found = make.sections(__import__("json").loads((ROOT / "notebooks" / f"{name}.ipynb").read_text()))
        for key in wanted:
            heading = make._source(found[key][0]).splitlines()[0].removeprefix("## ")
            assert heading.split("`")[0][:30] in html, (name, key)
    assert "Where did the reward go?" in html
    assert "def sft_loss" not in html and "import torch" not in html  # no code on the slides
    assert str(tmp_path) in capsys.readouterr().out


def test_a_plan_naming_a_missing_section_says_which(tmp_path):
    make = _make_slides()
    with pytest.raises(ValueError, match=r"has no section \[42\]"):
        make.slides(plan=[("01_sft_tiny_gpt", [42], "")])
