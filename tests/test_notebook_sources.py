"""Each tutorial notebook is written as a jupytext percent-format source, ``notebooks/NN_topic.py``,
paired with the stored ``NN_topic.ipynb`` (which keeps the outputs). Edit the ``.py``, then run
``jupytext --sync notebooks/NN_topic.py`` and re-execute the notebook. This test fails when the two
disagree, e.g. when only one of them was edited."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PAIRS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def cells(notebook) -> list[tuple[str, str, list[str]]]:
    """(type, source, tags) of every cell: what a reader sees and what nbval is told."""
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in notebook.cells]


def test_every_notebook_has_a_source():
    assert PAIRS, "no notebooks found"
    missing = [p.name for p in PAIRS if not p.with_suffix(".py").is_file()]
    assert not missing, f"notebooks without a jupytext source: {missing}"


@pytest.mark.parametrize("ipynb", PAIRS, ids=[p.stem for p in PAIRS])
def test_notebook_and_source_agree(ipynb):
    stored = nbformat.read(ipynb, as_version=4)
    source = jupytext.read(ipynb.with_suffix(".py"))
    assert stored.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", (
        f"{ipynb.name} is not paired: run jupytext --set-formats ipynb,py:percent {ipynb.name}")
    assert cells(stored) == cells(source), (
        f"{ipynb.name} and {ipynb.with_suffix('.py').name} differ: edit the .py, then run "
        f"`jupytext --sync notebooks/{ipynb.with_suffix('.py').name}` and re-execute the notebook")


def test_the_check_sees_a_difference(tmp_path):
    ipynb = PAIRS[0]
    source = jupytext.read(ipynb.with_suffix(".py"))
    source.cells[1].source += "\nprint('edited in the source only')"
    assert cells(nbformat.read(ipynb, as_version=4)) != cells(source)


STORED = PAIRS + sorted((NOTEBOOKS / "exercises" / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("ipynb", STORED, ids=[p.stem for p in STORED])
def test_a_stored_notebook_shows_what_a_reader_should_see(ipynb):
    """Opened in JupyterLab before anything runs: no widget state, no widget text, no stale
    progress bar, no traceback (re-executing with ipywidgets installed stores the first two)."""
    import re

    notebook = nbformat.read(ipynb, as_version=4)
    assert "widgets" not in notebook.metadata, (
        f"{ipynb.name} stores widget state: remove metadata['widgets'] (nothing shows it)")
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            where = f"{ipynb.name}, cell {index}"
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {}), where
            assert not re.search(r"[VH]Box\(children", text), f"{where}: a widget's text repr"
            assert not re.search(r"\d+%\|", text), f"{where}: a progress bar: {text[:80]!r}"
            assert output.get("output_type") != "error", f"{where}: a traceback"
