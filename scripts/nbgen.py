"""The small helper every ``scripts/make_notebook_*.py`` uses to write its notebook.

A generator script builds the cells in order with ``md(...)`` and ``code(...)``, then calls
``write(path)``. The notebook is written *without outputs*; execute it afterwards::

    python scripts/make_notebook_05.py
    jupyter nbconvert --to notebook --execute --inplace notebooks/05_ppo_vs_dpo.ipynb
"""

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parent.parent
cells: list = []


def md(text: str) -> None:
    """Append a Markdown cell."""
    cells.append(nbf.v4.new_markdown_cell(text.strip()))


def code(text: str) -> None:
    """Append a code cell."""
    cells.append(nbf.v4.new_code_cell(text.strip()))


def write(name: str, params: dict[str, str] | None = None) -> Path:
    """Write ``notebooks/<name>`` from the cells so far; each key of ``params`` in a cell's source
    is replaced by its value (for run lengths that a script tunes in one place)."""
    for cell in cells:
        for key, value in (params or {}).items():
            cell.source = cell.source.replace(key, value)
    notebook = nbf.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    path = ROOT / "notebooks" / name
    nbf.write(notebook, path)
    print("wrote", path)
    return path
