"""Make the exercise notebooks from the solution notebooks (the rules: :mod:`minirlhf.exercises.notebooks`).

The solutions are the source of truth: ``notebooks/exercises/solutions/NN_name.ipynb`` (and the
capstone's, ``notebooks/capstone/solutions/``), stored with their outputs and run by nbval. Each
exercise, ``notebooks/exercises/NN_name.ipynb``, is the same notebook with

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
import json
import sys
from pathlib import Path

from minirlhf.exercises.notebooks import (  # noqa: F401 - strip_code and make_exercise: the tests use them here
    dumps,
    make_exercise,
    strip_code,
)

EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
SOLUTIONS_DIR = EXERCISES_DIR / "solutions"
CAPSTONE_DIR = EXERCISES_DIR.parent / "capstone"
# (folder of the notebooks handed out, the pattern of their names); each has its solutions/ beside it
FOLDERS = [(EXERCISES_DIR, "[0-9]*.ipynb"), (CAPSTONE_DIR, "*.ipynb")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if an exercise notebook is out of date")
    args = parser.parse_args(argv)
    stale = []
    for folder, pattern in FOLDERS:
        solutions = sorted((folder / "solutions").glob(pattern))
        if not solutions:
            print(f"No solution notebooks in {folder / 'solutions'}", file=sys.stderr)
            return 1
        for path in solutions:
            text = dumps(make_exercise(json.loads(path.read_text(encoding="utf-8"))))
            target = folder / path.name
            if target.exists() and target.read_text(encoding="utf-8") == text:
                continue
            if args.check:
                stale.append(target)
            else:
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target}")
        for path in sorted(folder.glob(pattern)):
            if not (folder / "solutions" / path.name).exists():
                stale.append(path)
                print(f"{path} has no solution notebook in {folder / 'solutions'}", file=sys.stderr)
    if stale:
        print("Out of date: " + ", ".join(str(p) for p in stale)
              + "\nRun `python scripts/make_exercises.py`.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
