"""How long each notebook takes to run, top to bottom, and its longest cells.

    python benchmarks/notebook_times.py                 # notebooks 01-06 and the exercise solutions
    python benchmarks/notebook_times.py --only 03_ppo_with_kl

Each notebook runs in a fresh kernel (nbclient, as nbval and `jupyter nbconvert --execute` do) from its
own folder, with ``OMP_WAIT_POLICY=PASSIVE``; the time includes the kernel's start. The results go to
``benchmarks/results/notebook_times.json``, which ``docs/teachers.md`` reads. The machine's load average
is recorded before and after, since a busy machine makes every time an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "exercises" / "solutions").glob("*.ipynb"))
# What the 90-minute class of docs/teachers.md runs: notebooks 01-03, then exercise 5's solution
# stands in for a student's finished exercise.
CLASS_90MIN = ("01_sft_tiny_gpt", "02_reward_model", "03_ppo_with_kl", "05_dpo_loss")


def cell_seconds(cell) -> float | None:
    """A code cell's run time from the timestamps nbclient records in its metadata."""
    stamps = cell.get("metadata", {}).get("execution", {})
    start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def run_notebook(path: Path) -> dict:
    """Run one notebook in a fresh kernel; its wall time and its three longest cells."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    cells = []
    for cell in notebook.cells:
        took = cell_seconds(cell) if cell.cell_type == "code" else None
        if took is not None:
            lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
            first = lines[0] if lines else ""
            cells.append({"seconds": round(took, 1), "first_line": first[:80]})
    cells.sort(key=lambda c: -c["seconds"])
    return {"seconds": round(seconds, 1), "longest_cells": cells[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="notebook names (stems) to run; default: all")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "notebook_times.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.json)
    result = json.loads(out.read_text()) if out.exists() and args.only else {"notebooks": {}}
    result.update({"command": "python benchmarks/notebook_times.py", "cpu_count": os.cpu_count(),
                   "machine": platform.processor() or platform.machine()})
    if not args.only:  # the whole set's load; a partial rerun records its own load on its rows
        result["load_average_before"] = os.getloadavg()
    for path in TUTORIALS + SOLUTIONS:
        if args.only and path.stem not in args.only:
            continue
        row = {**run_notebook(path), "load_average_after": os.getloadavg()[0]}
        result["notebooks"][path.stem] = row
        print(f"{path.stem:40s} {row['seconds']:7.1f} s   longest: {row['longest_cells'][0]}", flush=True)
    if not args.only:
        result["load_average_after"] = os.getloadavg()
    if all(name in result["notebooks"] for name in CLASS_90MIN):
        seconds = [result["notebooks"][name]["seconds"] for name in CLASS_90MIN]
        result["class_90min"] = {"notebooks": list(CLASS_90MIN), "seconds": round(sum(seconds), 1),
                                 "longest": max(seconds)}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
