"""How safe is each notebook's asserted lesson? Re-execute the notebooks under perturbations and
report the margin of every assertion.

    python benchmarks/notebook_lessons.py                           # every notebook, 3 variants
    python benchmarks/notebook_lessons.py --notebooks 03 04 --variants 1:2 2:2 0:1
    python benchmarks/notebook_lessons.py --json benchmarks/results/notebook_lessons.json

A variant ``SEED:THREADS`` sets the notebook's ``SEED`` (its settings cell: ``SEED = 0`` or ``SEED,
THREADS = 0, 1``) and its thread count (``torch.set_num_threads``) before running it. Each
``assert`` in the notebooks is rewritten to record, instead of stopping the notebook:

* for a comparison ``a > b`` (or ``<``, ``>=``, ``<=``, chained), the margin ``a - b`` (or ``b - a``):
  how far the lesson is from failing, in the units of the quantity;
* for ``all(a > b for ...)`` the smallest such margin, for ``x and y`` the smaller of the two;
* for anything else, only whether it held.

A lesson that holds in one variant but not in another is a bug (it was a coin toss, not a lesson).
The executed copies live in a temporary folder; the stored notebooks are not touched.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
RECORDER = '''
import json as _json, os as _os
_LESSONS = []
def _lesson(cell, line, text, held, margin):
    try:
        margin = float(margin())
    except Exception:  # not a number (a set, a string): only whether it held counts
        margin = None
    _LESSONS.append({"cell": cell, "line": line, "assert": text, "held": bool(held), "margin": margin})
    with open(_os.environ["LESSONS_OUT"], "w") as _f:
        _json.dump(_LESSONS, _f)
'''


def margin_of(test: ast.expr) -> ast.expr | None:
    """An expression for how far ``test`` is from failing (positive when it holds), or None."""
    if isinstance(test, ast.Compare):
        parts, left = [], test.left
        for op, right in zip(test.ops, test.comparators):
            if isinstance(op, (ast.Gt, ast.GtE)):
                parts.append(ast.BinOp(left, ast.Sub(), right))
            elif isinstance(op, (ast.Lt, ast.LtE)):
                parts.append(ast.BinOp(right, ast.Sub(), left))
            else:
                return None
            left = right
        return parts[0] if len(parts) == 1 else ast.Call(ast.Name("min", ast.Load()), parts, [])
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        parts = [margin_of(v) for v in test.values]
        return None if None in parts else ast.Call(ast.Name("min", ast.Load()), parts, [])
    if (isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.func.id == "all"
            and len(test.args) == 1 and isinstance(test.args[0], ast.GeneratorExp)):
        inner = margin_of(test.args[0].elt)
        if inner is not None:
            return ast.Call(ast.Name("min", ast.Load()),
                            [ast.GeneratorExp(inner, test.args[0].generators)], [])
    return None


class RecordAsserts(ast.NodeTransformer):
    """``assert test`` -> ``_lesson(cell, line, "test", test, margin)``: record, do not stop."""

    def __init__(self, cell: int, source: str):
        self.cell, self.source = cell, source

    def visit_Assert(self, node: ast.Assert):
        margin = margin_of(node.test)
        text = ast.get_source_segment(self.source, node.test) or ast.unparse(node.test)
        no_args = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
        lazy = ast.Lambda(no_args, margin if margin is not None else ast.Constant(None))
        where = [ast.Constant(self.cell), ast.Constant(node.lineno), ast.Constant(text)]
        call = ast.Call(ast.Name("_lesson", ast.Load()), [*where, node.test, lazy], [])
        return ast.copy_location(ast.Expr(call), node)


def perturbed(notebook, seed: int, threads: int):
    """A copy of ``notebook`` with the seed and thread count set, and every assert recording."""
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    notebook.cells.insert(0, nbformat.v4.new_code_cell(RECORDER))
    for i, cell in enumerate(notebook.cells[1:], start=1):
        if cell.cell_type != "code" or cell.source.lstrip().startswith(("%", "!")):
            continue
        source = re.sub(r"^SEED, THREADS = \d+, \d+", f"SEED, THREADS = {seed}, {threads}", cell.source,
                        flags=re.M)
        source = re.sub(r"^SEED = \d+", f"SEED = {seed}", source, flags=re.M)
        source = re.sub(r"torch\.set_num_threads\((\d+|THREADS)\)", f"torch.set_num_threads({threads})",
                        source)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            cell.source = source
            continue
        cell.source = ast.unparse(ast.fix_missing_locations(RecordAsserts(i, source).visit(tree)))
        cell.outputs = []
    return notebook


def run(path: Path, seed: int, threads: int, timeout: int) -> list[dict]:
    """Execute the perturbed copy of ``path`` (in its folder, so relative paths work); its lessons."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lessons.json"
        os.environ["LESSONS_OUT"] = str(out)
        notebook = perturbed(nbformat.read(path, as_version=4), seed, threads)
        client = NotebookClient(notebook, timeout=timeout, allow_errors=True,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        errors = [o.get("ename") for c in notebook.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        lessons = json.loads(out.read_text()) if out.exists() else []
        if errors:
            lessons.append({"cell": None, "assert": f"the notebook ran without an error ({errors})",
                            "held": False, "margin": None})
        return lessons


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="+", default=None, help="numbers, e.g. 03 04 (default: all)")
    parser.add_argument("--variants", nargs="+", default=["1:1", "2:1", "0:2"], help="SEED:THREADS")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--json", help="write every margin to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name[:2] in args.notebooks]
    results, worst = {}, {}
    for path in paths:
        for variant in args.variants:
            seed, threads = (int(x) for x in variant.split(":"))
            lessons = run(path, seed, threads, args.timeout)
            results[f"{path.stem} seed={seed} threads={threads}"] = lessons
            for lesson in lessons:
                key = (path.stem, lesson["cell"], lesson["assert"])
                margin = lesson["margin"] if lesson["held"] else -1.0
                worst[key] = min(worst.get(key, float("inf")), margin if margin is not None else 0.0)
                flag = "ok  " if lesson["held"] else "FAIL"
                shown = "" if lesson["margin"] is None else f"margin {lesson['margin']:+.4g}"
                print(f"{flag} {path.stem} seed={seed} threads={threads} cell {lesson['cell']}: "
                      f"{lesson['assert'][:70]:70s} {shown}", flush=True)
    failed = [key for key, lessons in results.items() for lesson in lessons if not lesson["held"]]
    print(f"\n{sum(len(v) for v in results.values())} assertion checks, {len(failed)} failed")
    if args.json:
        Path(args.json).write_text(json.dumps({"variants": args.variants, "results": results}, indent=1))
    shutil.rmtree(ROOT / "notebooks" / ".ipynb_checkpoints", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
