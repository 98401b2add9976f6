"""Benchmark of minirlhf's critic-free RL on the toy world (issue 18): which variant reaches pi*?

For each variant and beta, train from the SFT model with the ground-truth reward and the default
:class:`~minirlhf.grpo.GRPOConfig` (except what the variant sets), one torch thread, and report the
exact attainment of the KL-regularised objective at that beta (``minirlhf.optimum``) on the training
and the held-out prompts, medians over seeds. At beta 0 there is no KL-regularised objective (pi*
puts all its mass on the best answer): the run reports the true reward, the KL and P(correct).

Variants (``--variants``):

* ``grpo_k1``  GRPO advantages (group mean and std, length-normalised loss), k1 in the reward (as PPO)
* ``grpo_k3``  GRPO advantages, k3 in the loss (as TRL's GRPOTrainer)
* ``dr_grpo``  Dr. GRPO (group mean only, no length normalisation), k1 in the reward
* ``rloo``     RLOO (leave-one-out baseline, no length normalisation), k1 in the reward

Targets (issue 18): GRPO (k1 in the reward) and RLOO at beta 0.1: attainment >= 0.97 on the training
prompts and >= 0.93 on the held-out ones.

Usage::

    python benchmarks/grpo.py --variants grpo_k1,rloo --betas 0.1 --out benchmarks/results/grpo_targets.json
    python benchmarks/grpo.py --variants grpo_k3,dr_grpo --betas 0.1,0.5 --seeds 0
    python benchmarks/grpo.py --betas 0 --steps 300
    python benchmarks/grpo.py --variants dr_grpo --length-normalise on --betas 0.1   # GRPO without the std
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

import torch  # noqa: E402

from minirlhf import world  # noqa: E402
from minirlhf.evaluation import exact_metrics  # noqa: E402
from minirlhf.grpo import GRPOConfig, train_grpo  # noqa: E402
from minirlhf.saved_models import load_base_model  # noqa: E402
from minirlhf.optimum import ExactEvaluator  # noqa: E402

VARIANTS = {
    "grpo_k1": {"advantage": "grpo", "kl": "reward"},
    "grpo_k3": {"advantage": "grpo", "kl": "loss"},
    "dr_grpo": {"advantage": "dr_grpo", "kl": "reward"},
    "rloo": {"advantage": "rloo", "kl": "reward"},
}
TARGETS = {("grpo_k1", 0.1): {"train": 0.97, "held_out": 0.93},
           ("rloo", 0.1): {"train": 0.97, "held_out": 0.93}}


def run(variant: str, beta: float, seed: int, evaluators: dict, ref, tokenizer, overrides: dict) -> dict:
    """One training run; the exact figures of its last step."""
    config = GRPOConfig(beta=beta, seed=seed, progress=False, **VARIANTS[variant], **overrides)
    config.eval_every = config.steps
    start = time.perf_counter()
    _, history = train_grpo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"), config,
                            evaluate=exact_metrics(evaluators["train"], beta,
                                                   held_out=evaluators["held_out"]))
    last = history[-1]
    out = {"seed": seed, "seconds": time.perf_counter() - start,
           "seconds_per_step": statistics.median(h["time/step"] for h in history[1:])}
    for prefix, split in (("exact", "train"), ("exact_held_out", "held_out")):
        for key in ("attainment", "true_reward", "kl", "p_correct", "coverage"):
            if f"{prefix}/{key}" in last:
                out[f"{split}_{key}"] = last[f"{prefix}/{key}"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--betas", default="0.1,0.5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None, help="steps (default: GRPOConfig's)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: GRPOConfig's, min(3e-4, 1e-4 / beta)")
    parser.add_argument("--epochs", type=int, default=None, help="default: GRPOConfig's")
    parser.add_argument("--group-size", type=int, default=None, help="G (default: GRPOConfig's, 4)")
    parser.add_argument("--prompts-per-step", type=int, default=None, help="default: GRPOConfig's, 16")
    parser.add_argument("--minibatches", type=int, default=None, help="default: GRPOConfig's, 2")
    parser.add_argument("--adam-eps", type=float, default=None, help="default: GRPOConfig's, 1e-8")
    parser.add_argument("--embedding-lr-scale", type=float, default=None, help="default: GRPOConfig's, 0.1")
    parser.add_argument("--length-normalise", choices=("on", "off"), default=None,
                        help="average each answer's token losses (default: the variant's; on for GRPO only)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--notebook-cache", action="store_true",
                        help="also bundle every benchmarks/results/grpo*.json into "
                             "minirlhf/cached_runs/grpo_long_runs.json (notebook 06 reads it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {name: value for name, value in (
        ("steps", args.steps), ("learning_rate", args.learning_rate), ("epochs", args.epochs),
        ("group_size", args.group_size), ("prompts_per_step", args.prompts_per_step),
        ("minibatches", args.minibatches), ("embedding_lr_scale", args.embedding_lr_scale),
        ("adam_eps", args.adam_eps),
        ("length_normalise", None if args.length_normalise is None else args.length_normalise == "on"))
        if value is not None}
    ref, tokenizer = load_base_model()
    evaluators = {split: ExactEvaluator(ref, tokenizer, world.prompts(split))
                  for split in ("train", "held_out")}
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {"targets": {f"{v}/beta={b}": t for (v, b), t in TARGETS.items()}, "overrides": overrides,
               "threads": args.threads, "runs": {}}
    summary = {}
    for variant in args.variants.split(","):
        for beta in (float(b) for b in args.betas.split(",")):
            runs = []
            for seed in seeds:
                runs.append(run(variant, beta, seed, evaluators, ref, tokenizer, overrides))
                r = runs[-1]
                shown = "attainment" if beta > 0 else "true_reward"
                print(f"{variant} beta={beta} seed={seed}: train {shown} {r[f'train_{shown}']:.4f}  "
                      f"held-out {r[f'held_out_{shown}']:.4f}  kl {r['train_kl']:.3f}  "
                      f"({r['seconds']:.0f} s)", flush=True)
            config = GRPOConfig(beta=beta, **VARIANTS[variant], **overrides)
            medians = {f"median_{key}": statistics.median(r[key] for r in runs)
                       for key in runs[0] if key.startswith(("train_", "held_out_"))}
            name = f"{variant}/beta={beta}"
            results["runs"][name] = {**medians, "steps": config.steps, "group_size": config.group_size,
                                     "prompts_per_step": config.prompts_per_step, "epochs": config.epochs,
                                     "learning_rate": config.policy_learning_rate(), "runs": runs}
            summary[name] = {k: round(v, 4) for k, v in medians.items()
                             if k.endswith(("attainment", "true_reward", "_kl"))}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    if args.notebook_cache:
        results_dir = Path(__file__).resolve().parent / "results"
        bundle = {f.name: json.loads(f.read_text()) for f in sorted(results_dir.glob("grpo*.json"))}
        cache = Path(__file__).resolve().parents[1] / "minirlhf" / "cached_runs" / "grpo_long_runs.json"
        cache.write_text(json.dumps(bundle, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
