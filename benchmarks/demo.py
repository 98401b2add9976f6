"""How long does `minirlhf demo` take? Run it a few times, report each stage's time and the median.

    python benchmarks/demo.py                  # 3 runs into a temporary folder
    python benchmarks/demo.py --runs 1 --json benchmarks/results/demo_timing.json

Each run is a fresh process (``python -m minirlhf.cli demo --out DIR``), as a user starts it; the
stage times come from the run's ``metrics.json``. The machine's CPU model and core count are
reported beside the times: the README's budget (180 s) is for a 2-core machine, and a number means
little without the machine it was measured on. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (Linux), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_run(outdir: Path) -> dict:
    """One demo in a fresh process; its wall time and the stage times from its metrics.json."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "minirlhf.cli", "demo", "--out", str(outdir)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics = json.loads((outdir / "metrics.json").read_text())
    return {"wall_seconds": round(wall, 1),
            "sft": metrics["sft"]["seconds"],
            "reward_model": round(metrics["reward_model"]["stage_seconds"], 1),
            "ppo": round(metrics["ppo"]["seconds"], 1), "dpo": round(metrics["dpo"]["seconds"], 1),
            "attainment_ppo": round(metrics["ppo"]["attainment"], 3),
            "attainment_dpo": round(metrics["dpo"]["attainment"], 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="write the runs and the median to this file")
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(Path(tmp) / "demo"))
        print(json.dumps(runs[-1]), flush=True)
    median = statistics.median(r["wall_seconds"] for r in runs)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": os.getloadavg()[0]}
    print(f"median {median:.0f} s over {len(runs)} runs on {machine['cpu']} ({machine['cores']} cores, "
          f"load average {machine['load_average']:.1f}); the budget is 180 s on 2 cores")
    if args.json:
        result = {"runs": runs, "median_seconds": median, **machine}
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
