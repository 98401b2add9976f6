"""Make the exercise notebooks from the solution notebooks.

The solutions are the source of truth: ``notebooks/exercises/solutions/NN_name.ipynb``, stored
with their outputs and run by nbval. Each exercise, ``notebooks/exercises/NN_name.ipynb``, is the
same notebook with

* the code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` replaced by
  ``raise NotImplementedError("TODO: write <function>")`` (such cells get the tag ``todo``);
* markdown between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->`` removed;
* every output cleared, so that the student runs it fresh.

Usage::

    python scripts/make_exercises.py           # rewrite the exercise notebooks
    python scripts/make_exercises.py --check   # exit 1 if any is out of date (used by the tests)
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
SOLUTIONS_DIR = EXERCISES_DIR / "solutions"

BEGIN_CODE, END_CODE = "### BEGIN SOLUTION", "### END SOLUTION"
MARKDOWN_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->\n?", re.DOTALL)
DEF_LINE = re.compile(r"^\s*def (\w+)\(")


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
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# TODO: replace the next line with your code.\n")
            out.append(f'{indent}raise NotImplementedError("TODO: write {function}")\n')
        elif stripped == END_CODE:
            if not inside:
                raise ValueError(f"{END_CODE!r} without {BEGIN_CODE!r} in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN_CODE!r} without {END_CODE!r} in:\n{source}")
    return "".join(out).rstrip("\n"), found


def make_exercise(solution: dict) -> dict:
    """The exercise notebook (a dict in nbformat 4) made from a solution notebook."""
    notebook = copy.deepcopy(solution)
    for cell in notebook["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if an exercise notebook is out of date")
    args = parser.parse_args(argv)
    solutions = sorted(SOLUTIONS_DIR.glob("[0-9]*.ipynb"))
    if not solutions:
        print(f"No solution notebooks in {SOLUTIONS_DIR}", file=sys.stderr)
        return 1
    stale = []
    for path in solutions:
        text = dumps(make_exercise(json.loads(path.read_text(encoding="utf-8"))))
        target = EXERCISES_DIR / path.name
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(target)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    for path in sorted(EXERCISES_DIR.glob("[0-9]*.ipynb")):
        if not (SOLUTIONS_DIR / path.name).exists():
            stale.append(path)
            print(f"{path} has no solution notebook in {SOLUTIONS_DIR}", file=sys.stderr)
    if stale:
        print("Out of date: " + ", ".join(str(p) for p in stale)
              + "\nRun `python scripts/make_exercises.py`.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
