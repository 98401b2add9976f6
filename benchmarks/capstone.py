"""The capstone's bar, measured: what a correct PPO loop (``minirlhf.exercises.capstone.reference_loop``,
the plain loop the capstone asks a student to write) reaches within the graded budget, seed by seed,
and how long each graded run takes.

The grade's bar (``capstone.BAR``) must sit below every seed's attainment with a margin; this script
gives the numbers (exact attainment at the capstone's beta, KL, expected reward, seconds per run).

Usage::

    python benchmarks/capstone.py                      # seeds 0-4 and the hidden seeds
    python benchmarks/capstone.py --seeds 0 1 --threads 2 --out benchmarks/results/capstone.json

Run it on an otherwise idle machine for the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from minirlhf.exercises import capstone  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, *capstone.HIDDEN_SEEDS])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the grading machine's cores)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "capstone.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = capstone.grade_ppo_loop(capstone.reference_loop, seeds=tuple(args.seeds), verbose=True)
    attainments = [run.attainment for run in result.runs]
    summary = {
        "what": "reference_loop graded by grade_ppo_loop at the capstone's defaults",
        "beta": capstone.BETA, "steps": capstone.STEPS, "bar": capstone.BAR,
        "config": {k: v for k, v in vars(capstone.capstone_config()).items() if not k.startswith("_")},
        "threads": args.threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores visible",
        "runs": [vars(run) for run in result.runs],
        "attainment_min": min(attainments), "attainment_median": statistics.median(attainments),
        "seconds_median": statistics.median(run.seconds for run in result.runs),
        "points": result.points, "bugs": result.bugs,
    }
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
