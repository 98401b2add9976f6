"""One process against two: the TRL examples' exact attainment, measured. Needs the ``trl`` extra.

    python benchmarks/trl_multiprocess.py                      # both settings, both examples
    python benchmarks/trl_multiprocess.py --settings short     # only the tests' short runs

For each example (``examples/trl_dpo.py``, ``examples/trl_grpo.py``), each setting and each seed, it runs
the example once as a plain ``python`` process and once under ``torchrun --standalone
--nproc_per_node 2`` (gloo, on the CPU), at the same settings and the same global batch, and records
the final exact attainment (training and held-out prompts), the optimizer steps and the wall seconds.
Settings:

* ``short``: the runs of ``tests/test_trl_multiprocess.py`` (a few optimizer steps);
* ``full``: the examples' defaults (DPO: 4 epochs of 2,048 pairs; GRPO: 200 batches).

Two processes split every batch and average their gradients, so DPO (fixed pairs, the same batches in
the same order) differs from one process only by floating-point rounding; GRPO samples its answers,
and each process draws its own, so it differs as one seed differs from another. The summary of each
(example, setting) gives the largest difference between the two over the seeds and the spread of the
single-process attainment over the seeds (its standard deviation), and the tolerance the tests use:

* ``tolerance`` = max(3 x the largest measured difference, 0.002) for DPO, and for GRPO also at least
  4 x the single-process spread over seeds (the difference of two draws is a seed's luck): wide
  enough for what was measured, no wider; 0.002 covers the rounding of the final line to 3
  decimals, which the tests read.

Writes ``benchmarks/results/trl_multiprocess.json``. ``--worker`` is internal: the process that runs one
example and writes its final figures as JSON (on the main process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "trl_multiprocess.json"
EXAMPLES = ("dpo", "grpo")
SETTINGS = {
    "short": {"dpo": ["--max-steps", "8", "--eval-every", "0"],
              "grpo": ["--steps", "4", "--eval-every", "0"]},
    "full": {"dpo": ["--eval-every", "0"], "grpo": ["--eval-every", "0"]},
}
"""Arguments of each example in each setting (the seed is added per run)."""
KEYS = {"attainment": "exact/attainment", "held_out_attainment": "exact_held_out/attainment",
        "kl": "exact/kl", "p_correct": "exact/p_correct"}


def worker(example: str, out: str, argv: list[str]) -> None:
    """Run ``examples/trl_<example>.py`` in this process (one of several under torchrun) and, on the
    main process, write its final exact figures to ``out``."""
    sys.path.insert(0, str(ROOT / "examples"))
    module = __import__(f"trl_{example}")
    start = time.perf_counter()
    final = module.main(argv)
    if final is not None:
        Path(out).write_text(json.dumps({**{k: final[v] for k, v in KEYS.items()}, "steps": final["step"],
                                         "train_seconds": time.perf_counter() - start}))


def run(example: str, processes: int, argv: list[str]) -> dict:
    """One run of the example in a fresh process (or ``processes`` of them, under torchrun)."""
    with tempfile.TemporaryDirectory() as folder:
        result = os.path.join(folder, "result.json")
        script = [__file__, "--worker", example, "--result", result, "--", *argv, "--out", folder]
        launcher = ([sys.executable] if processes == 1 else
                    [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     f"--nproc_per_node={processes}"])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        done = subprocess.run(launcher + script, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(launcher + script)} failed:\n{done.stdout[-3000:]}\n"
                               f"{done.stderr[-3000:]}")
        finals = [line for line in done.stdout.splitlines() if line.startswith("TRL ")]
        return {**json.loads(Path(result).read_text()), "wall_seconds": round(seconds, 1),
                "final_lines": len(finals)}


def summarise(rows: list[dict], sampled: bool) -> dict:
    """Largest 1-vs-2 difference, the seeds' spread, and the tolerance, for one (example, setting)."""
    by_seed = {}
    for row in rows:
        by_seed.setdefault(row["seed"], {})[row["processes"]] = row
    pairs = [(s[1], s[2]) for s in by_seed.values() if 1 in s and 2 in s]
    summary = {"seeds": sorted(by_seed)}
    for key in ("attainment", "held_out_attainment"):
        diffs = [abs(two[key] - one[key]) for one, two in pairs]
        ones = [one[key] for one, _ in pairs]
        summary[key] = {
            "one_process": ones, "two_processes": [two[key] for _, two in pairs],
            "max_difference": max(diffs), "mean_difference": statistics.fmean(diffs),
            "seed_spread_one_process": statistics.stdev(ones) if len(ones) > 1 else None}
    stats = summary["attainment"]
    spread = stats["seed_spread_one_process"] or 0.0
    summary["tolerance"] = round(max(3 * stats["max_difference"], 4 * spread if sampled else 0, 0.002), 4)
    summary["steps"] = sorted({row["steps"] for row in rows})
    summary["wall_seconds"] = {n: statistics.median(r["wall_seconds"] for r in rows if r["processes"] == n)
                               for n in (1, 2)}
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["short", "full"])
    parser.add_argument("--examples", nargs="+", choices=EXAMPLES, default=list(EXAMPLES))
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="default: 0-4 for the short runs, 0-2 for the full ones")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", choices=EXAMPLES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.worker:
        return worker(args.worker, args.result, [a for a in rest if a != "--"])

    import torch
    import trl
    from demo import cpu_model  # benchmarks/, beside this script

    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for setting in args.settings:
        for example in args.examples:
            rows = []
            for seed in args.seeds or (range(5) if setting == "short" else range(3)):
                for processes in (1, 2):
                    argv_ = SETTINGS[setting][example] + ["--seed", str(seed)]
                    rows.append({"seed": seed, "processes": processes, **run(example, processes, argv_)})
                    print(json.dumps({"example": example, "setting": setting, **rows[-1]}), flush=True)
            results[f"{example}_{setting}"] = {
                "example": f"examples/trl_{example}.py", "arguments": SETTINGS[setting][example],
                **summarise(rows, sampled=example == "grpo"), "runs": rows,
                "command": "python benchmarks/trl_multiprocess.py " + " ".join(argv or sys.argv[1:]),
                "launcher": "python (1 process), torchrun --standalone --nproc_per_node 2 (2, gloo)",
                "trl_version": trl.__version__, "torch_version": torch.__version__, "cpu": cpu_model(),
                "cores": os.cpu_count()}
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            summary = results[f"{example}_{setting}"]
            print(f"{example} {setting}: max |2 - 1 process| attainment "
                  f"{summary['attainment']['max_difference']:.4f}, seed spread "
                  f"{summary['attainment']['seed_spread_one_process'] or 0:.4f}, tolerance "
                  f"{summary['tolerance']}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
