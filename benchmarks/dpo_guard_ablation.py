"""Which part of offline DPO's guard matters? Each change of ``DPOConfig``'s defaults removed alone.

    python benchmarks/dpo_guard_ablation.py --json benchmarks/results/dpo_guard_ablation.json
    python benchmarks/dpo_guard_ablation.py --seeds 0 --variants defaults "NLL term removed"

Notebook 04 calls the defaults of :class:`minirlhf.dpo.DPOConfig` a *guard*: they differ from plain
DPO (as TRL's DPOTrainer runs it) in four ways: the chosen answers' NLL in the loss (``rpo_alpha``),
the first transformer block frozen (``frozen_blocks``), the token embeddings frozen
(``embedding_lr_scale``), and the schedule (learning rate 3e-4 for 4 epochs of 32 pairs, where the
notebook's plain run takes 1e-3 for 2 epochs of 64). Each variant takes back one of the four, on
the notebook's setting (beta 0.1, the tutorial's preference data of that seed), and is trained for
its length and 5 times longer, the notebook's test of a guard. Reported: the mass that leaks out of
the candidate set (1 - coverage) and the exact attainment, on the training and held-out prompts.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch

from minirlhf import world
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.models import load_base_model
from minirlhf.optimum import ExactEvaluator
from minirlhf.preferences import default_preferences

VARIANTS = {
    "defaults": {},
    "NLL term removed": {"rpo_alpha": 0.0},
    "first block trained": {"frozen_blocks": 0},
    "embeddings trained": {"embedding_lr_scale": 1.0},
    "plain schedule": {"learning_rate": 1e-3, "epochs": 2, "batch_size": 64},
}
"""Each variant: the defaults with one of the four changes taken back (to plain DPO's setting)."""


def run(variant: str, seed: int, longer: int, ref, tokenizer, evaluators, beta: float = 0.1) -> dict:
    """Train offline DPO with ``VARIANTS[variant]`` on seed ``seed``'s pairs, ``longer`` times the
    variant's epochs; exact leak and attainment at the end."""
    data = default_preferences(seed=seed, progress=False)["train"]
    config = DPOConfig(beta=beta, seed=seed, progress=False, **VARIANTS[variant])
    config.epochs *= longer
    start = time.perf_counter()
    policy, _ = train_dpo(copy.deepcopy(ref), ref, tokenizer, data, config)
    row = {"variant": variant, "seed": seed, "longer": longer, "epochs": config.epochs,
           "seconds": round(time.perf_counter() - start, 1)}
    for split, evaluator in evaluators.items():
        report = evaluator.evaluate(policy, beta)
        row[f"{split}_attainment"] = round(report["attainment"], 4)
        row[f"{split}_leak"] = round(1 - report["coverage"], 4)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--longer", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows and the summary to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref, tokenizer = load_base_model()
    evaluators = {"train": ExactEvaluator(ref, tokenizer, world.prompts("train")),
                  "held_out": ExactEvaluator(ref, tokenizer, world.prompts("held_out"))}
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            for longer in args.longer:
                rows.append(run(variant, seed, longer, ref, tokenizer, evaluators))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for variant in args.variants:
        for longer in args.longer:
            group = [r for r in rows if r["variant"] == variant and r["longer"] == longer]
            key = variant.replace(" ", "_") + f"_x{longer}"
            summary[key] = {"seeds": len(group)}
            for metric in ("train_leak", "held_out_leak", "train_attainment", "held_out_attainment"):
                values = [r[metric] for r in group]
                summary[key][f"{metric}_median"] = round(statistics.median(values), 4)
                summary[key][f"{metric}_min"] = round(min(values), 4)
                summary[key][f"{metric}_max"] = round(max(values), 4)
    print("\n| variant | length | leak, train (median, max) | attainment, train (median, min) "
          "| attainment, held-out (median, min) |")
    print("|---|---|---|---|---|")
    for variant in args.variants:
        for longer in args.longer:
            s = summary[variant.replace(" ", "_") + f"_x{longer}"]
            print(f"| {variant} | x{longer} | {s['train_leak_median']:.3f}, {s['train_leak_max']:.3f} "
                  f"| {s['train_attainment_median']:.3f}, {s['train_attainment_min']:.3f} "
                  f"| {s['held_out_attainment_median']:.3f}, {s['held_out_attainment_min']:.3f} |")
    if args.json:
        command = "python benchmarks/dpo_guard_ablation.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "summary": summary, "command": command}, f, indent=2)


if __name__ == "__main__":
    main()
