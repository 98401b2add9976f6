"""minirlhf's offline DPO (its defaults) against TRL 1.16's DPOTrainer at TRL's defaults and its best
learning rate from a small grid, on identical pairs and the same SFT model. Needs the ``trl`` extra.

    python benchmarks/dpo_vs_trl.py                                 # betas 0.1 0.5, seeds 0 1 2
    python benchmarks/dpo_vs_trl.py --betas 0.1 --seeds 0 --grid 1e-6 1e-5

For each beta, TRL runs every learning rate of ``--grid`` at the first seed with everything else at
TRL's defaults (``examples/trl_dpo.py --recipe trl``: batch 8, 3 epochs, linear decay, sigmoid loss,
every weight trained); the rate with the best training attainment then runs at the other seeds.
minirlhf runs ``train_dpo`` with ``DPOConfig(beta=..., seed=...)``. Both learn from
``default_preferences()["train"]`` (2,048 pairs from the shipped SFT model) and are measured
exactly: attainment on the training and held-out prompts, and the mass leaked outside the
candidate set. Writes ``benchmarks/results/dpo_vs_trl.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402
import trl_dpo  # noqa: E402  (examples/)

from minirlhf import world  # noqa: E402
from minirlhf.dpo import DPOConfig, train_dpo  # noqa: E402
from minirlhf.saved_models import load_base_model  # noqa: E402
from minirlhf.optimum import ExactEvaluator  # noqa: E402
from minirlhf.preferences import default_preferences  # noqa: E402


def minirlhf_run(beta: float, seed: int, ref, tokenizer) -> dict:
    start = time.perf_counter()
    data = default_preferences(seed=0, progress=False)["train"]  # the same pairs for every run
    config = DPOConfig(beta=beta, seed=seed, progress=False)
    policy, _ = train_dpo(copy.deepcopy(ref), ref, tokenizer, data, config)
    train = ExactEvaluator(ref, tokenizer, world.prompts("train")).evaluate(policy, beta)
    held_out = ExactEvaluator(ref, tokenizer, world.prompts("held_out")).evaluate(policy, beta)
    return {"attainment": train["attainment"], "held_out": held_out["attainment"],
            "leak": 1 - train["coverage"], "seconds": time.perf_counter() - start}


def trl_run(beta: float, seed: int, lr: float, threads: int) -> dict:
    start = time.perf_counter()
    final = trl_dpo.main(["--recipe", "trl", "--beta", str(beta), "--seed", str(seed), "--learning-rate",
                          str(lr), "--eval-every", "0", "--threads", str(threads),
                          "--out", str(ROOT / "trl-dpo-vs-trl")])
    return {"attainment": final["exact/attainment"], "held_out": final["exact_held_out/attainment"],
            "leak": 1 - final["exact/coverage"], "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grid", type=float, nargs="+", default=[1e-6, 1e-5, 3e-5, 1e-4],
                        help="TRL's learning rates to try (its default is 1e-6)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref, tokenizer = load_base_model()
    rows = []

    def record(library, beta, seed, lr, result):
        rows.append({"library": library, "beta": beta, "seed": seed, "learning_rate": lr,
                     **{k: round(v, 4) for k, v in result.items()}})
        print(json.dumps(rows[-1]), flush=True)

    summary = []
    for beta in args.betas:
        for seed in args.seeds:
            record("minirlhf", beta, seed, DPOConfig.learning_rate, minirlhf_run(beta, seed, ref, tokenizer))
        grid = {lr: trl_run(beta, args.seeds[0], lr, args.threads) for lr in args.grid}
        for lr, result in grid.items():
            record("trl", beta, args.seeds[0], lr, result)
        best = max(grid, key=lambda lr: grid[lr]["attainment"])
        for seed in args.seeds[1:]:
            record("trl", beta, seed, best, trl_run(beta, seed, best, args.threads))
        for library, lr in (("minirlhf", DPOConfig.learning_rate), ("trl", best)):
            runs = [r for r in rows
                    if r["library"] == library and r["beta"] == beta and r["learning_rate"] == lr]
            summary.append({"library": library, "beta": beta, "learning_rate": lr, "seeds": len(runs),
                            **{k: statistics.median(r[k] for r in runs)
                               for k in ("attainment", "held_out", "leak", "seconds")},
                            "max_leak": max(r["leak"] for r in runs)})
    lines = ["| library | beta | learning rate | seeds | attainment | held-out | leak (max) | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s['library']} | {s['beta']} | {s['learning_rate']:g} | {s['seeds']} | "
              f"{s['attainment']:.3f} | {s['held_out']:.3f} | {s['leak']:.1%} ({s['max_leak']:.1%}) | "
              f"{s['seconds']:.0f} |"
              for s in summary]
    print("\n".join(lines))
    out = ROOT / "benchmarks" / "results" / "dpo_vs_trl.json"
    command = " ".join(["python benchmarks/dpo_vs_trl.py", *(argv or sys.argv[1:])])
    out.write_text(json.dumps({"command": command, "rows": rows, "summary": summary, "table": lines},
                              indent=1) + "\n")


if __name__ == "__main__":
    main()
