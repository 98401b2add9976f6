"""The exercise notebooks, made from their solutions.

The solutions are the source of truth: ``notebooks/exercises/solutions/NN_name.ipynb`` in a checkout
of the repository, stored with their outputs and run by nbval. An exercise is the same notebook with

* the code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` replaced by
  ``raise NotImplementedError("TODO: write <function>")`` (such cells get the tag ``todo``);
* markdown between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->`` removed;
* every output cleared, so that the student runs it fresh.

``scripts/make_exercises.py`` writes them next to the solutions; :mod:`minirlhf.exercises.autograde`
turns the same solutions into an autograder's format.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

BEGIN_CODE, END_CODE = "### BEGIN SOLUTION", "### END SOLUTION"
MARKDOWN_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->\n?", re.DOTALL)
DEF_LINE = re.compile(r"^\s*def (\w+)\(")


def find_solutions_dir(solutions: str | Path | None = None) -> Path:
    """The folder of solution notebooks: ``solutions`` if given, else the one of the checkout this
    package was installed from (an editable install, or ``PYTHONPATH`` pointing at a checkout)."""
    if solutions is not None:
        path = Path(solutions)
    else:
        path = Path(__file__).resolve().parents[2] / "notebooks" / "exercises" / "solutions"
    if not sorted(path.glob("[0-9]*.ipynb")):
        raise FileNotFoundError(
            f"No solution notebooks (NN_name.ipynb) in {path}. They live in a checkout of the "
            "minirlhf repository, under notebooks/exercises/solutions/: run this from an editable "
            "install of a checkout (pip install -e .), or pass the folder with --solutions.")
    return path


def read_notebook(path: str | Path) -> dict:
    """A notebook as a dict in nbformat 4."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cell_source(cell: dict) -> str:
    """A cell's source as one string (notebooks store it as a string or a list of lines)."""
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def solution_functions(source: str) -> list[str]:
    """The functions whose bodies hold a solution block in ``source``, in order."""
    names, function = [], None
    for line in source.splitlines():
        match = DEF_LINE.match(line)
        if match:
            function = match.group(1)
        if line.strip() == BEGIN_CODE and function is not None:
            names.append(function)
    return names


def strip_code(source: str) -> tuple[str, bool]:
    """Replace each solution block by a TODO stub. Returns (new source, whether it had one)."""
    out, inside, function, found = [], False, "this function", False
    for line in source.splitlines(keepends=True):
        match = DEF_LINE.match(line)
        if match and not inside:
            function = match.group(1)
        stripped = line.strip()
        if stripped == BEGIN_CODE:
            if inside:
                raise ValueError(f"Nested {BEGIN_CODE!r} in:\n{source}")
            inside, found = True, True
            out.extend(todo_stub(line[: len(line) - len(line.lstrip())], function))
        elif stripped == END_CODE:
            if not inside:
                raise ValueError(f"{END_CODE!r} without {BEGIN_CODE!r} in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN_CODE!r} without {END_CODE!r} in:\n{source}")
    return "".join(out).rstrip("\n"), found


def todo_stub(indent: str, function: str) -> list[str]:
    """The lines a student finds where a solution was."""
    return [f"{indent}# TODO: replace the next line with your code.\n",
            f'{indent}raise NotImplementedError("TODO: write {function}")\n']


def make_exercise(solution: dict) -> dict:
    """The exercise notebook (a dict in nbformat 4) made from a solution notebook."""
    notebook = copy.deepcopy(solution)
    for cell in notebook["cells"]:
        source = cell_source(cell)
        if cell["cell_type"] == "code":
            source, has_todo = strip_code(source)
            tags = [t for t in cell.get("metadata", {}).get("tags", []) if t != "todo"]
            if has_todo:
                tags.append("todo")
            cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k != "tags"}
            if tags:
                cell["metadata"]["tags"] = tags
            cell["outputs"], cell["execution_count"] = [], None
        elif cell["cell_type"] == "markdown":
            source = MARKDOWN_SOLUTION.sub("", source)
        cell["source"] = source.splitlines(keepends=True)
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


def dumps(notebook: dict) -> str:
    """Serialise like Jupyter does (one-space indent, non-ASCII kept, final newline)."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
