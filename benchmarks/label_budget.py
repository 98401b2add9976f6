"""PPO vs DPO at equal label budgets: exact attainment against the number of rater labels paid.

Real alignment work pays for human labels, not CPU seconds. For each budget B (rater labels), from
the shipped SFT model, at one beta:

* **PPO-RM**: half of B buys the reward model's pairs (sampled from pi_ref, 80% train / 20% test),
  the other half the rater's refreshes during PPO (8 pairs per prompt each, the policy's answer
  against pi_ref's), spread evenly over the run;
* **offline DPO**: B pairs sampled from pi_ref, rated once (80% to learn from, 20% for its guard);
* **online DPO**: B / 149 rounds of fresh pairs from the policy (149: its average labels per round
  over the default 100 rounds; early rounds, with more distinct answers, cost more);
* **KTO** (only when asked, ``--methods KTO``): B answers sampled from pi_ref, one thumbs label each
  (:func:`minirlhf.kto.unpaired_feedback`), learned with KTO's defaults.

Every method counts the labels it actually asked for (pairs of identical answers are not rated):
the table and the figure show those, not B. Each is measured exactly on the training and the
held-out prompts.

    python benchmarks/label_budget.py                       # budgets 500 ... 16000, seed 0
    python benchmarks/label_budget.py --budgets 1000 4000 --methods "Online DPO"
    python benchmarks/label_budget.py --notebook-cache      # also minirlhf/cached_runs/label_budget.json
    python benchmarks/label_budget.py --methods KTO DPO --name label_budget_kto   # docs/variants.md

PPO runs ``--ppo-steps`` (300 by default, not PPOConfig's 1000) to keep the sweep near half an
hour on 2 cores; every other setting is the method's default. Writes
``benchmarks/results/label_budget.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from minirlhf import world  # noqa: E402
from minirlhf.dpo import DPOConfig, train_dpo  # noqa: E402
from minirlhf.kto import KTOConfig, train_kto, unpaired_feedback  # noqa: E402
from minirlhf.saved_models import load_base_model  # noqa: E402
from minirlhf.online_dpo import OnlineDPOConfig, train_online_dpo  # noqa: E402
from minirlhf.optimum import ExactEvaluator  # noqa: E402
from minirlhf.pipeline import train_default_reward_model  # noqa: E402
from minirlhf.ppo import PPOConfig, train_ppo  # noqa: E402
from minirlhf.preferences import default_preferences  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("PPO-RM", "DPO", "Online DPO")
"""The methods of the default sweep (notebook 05's figure); ``KTO`` runs when named."""
ALL_METHODS = (*METHODS, "KTO")
N_PROMPTS = len(world.prompts("train"))
REFRESH_PAIRS = PPOConfig.refresh_pairs_per_prompt * N_PROMPTS  # labels per refresh, at most
ONLINE_LABELS_PER_ROUND = 149  # measured with the defaults: 16 pairs per prompt, about half distinct


def pairs_per_prompt(labels: int) -> int:
    """Pairs per training prompt that buy about ``labels`` labels (at least 2: a train and a test pair)."""
    return max(2, round(labels / N_PROMPTS))


def run(method: str, budget: int, beta: float, seed: int, ppo_steps: int, ref, tokenizer) -> dict:
    """Train ``method`` from the SFT model on ``budget`` labels; return its labels, seconds and policy."""
    policy = copy.deepcopy(ref)
    start = time.perf_counter()
    if method == "PPO-RM":
        per_prompt = pairs_per_prompt(budget / 2)
        reward_model, _, data, _ = train_default_reward_model(seed=seed, progress=False,
                                                              pairs_per_prompt=per_prompt)
        refreshes = (budget - per_prompt * N_PROMPTS) // REFRESH_PAIRS
        config = PPOConfig(beta=beta, seed=seed, steps=ppo_steps, progress=False, eval_every=0,
                           reward_refresh_every=math.ceil(ppo_steps / (refreshes + 1)) if refreshes else 0)
        _, history = train_ppo(policy, ref, tokenizer, world.prompts("train"), config,
                               reward_model=reward_model, reward_data=data["train"],
                               rater=world.SimulatedRater(seed=seed) if refreshes else None)
        labels = per_prompt * N_PROMPTS + history[-1]["rater_labels"]
    elif method == "DPO":
        data = default_preferences(pairs_per_prompt=pairs_per_prompt(budget), seed=seed, progress=False)
        train_dpo(policy, ref, tokenizer, data["train"], DPOConfig(beta=beta, seed=seed, progress=False),
                  eval_data=data["test"])
        labels = len(data["train"]) + len(data["test"])
    elif method == "Online DPO":
        config = OnlineDPOConfig(beta=beta, seed=seed, progress=False,
                                 rounds=max(1, round(budget / ONLINE_LABELS_PER_ROUND)))
        _, history = train_online_dpo(policy, ref, tokenizer, world.prompts("train"),
                                      world.SimulatedRater(seed=seed), config)
        labels = history[-1]["rater_labels"]
    elif method == "KTO":
        feedback = unpaired_feedback(ref, tokenizer, world.prompts("train"), max(1, round(budget / N_PROMPTS)),
                                     world.SimulatedRater(seed=seed), seed=seed)
        train_kto(policy, ref, tokenizer, feedback, KTOConfig(beta=beta, seed=seed, progress=False))
        labels = len(feedback)
    else:
        raise ValueError(f"Unknown method {method!r}: choose from {', '.join(ALL_METHODS)}.")
    return {"labels": labels, "seconds": time.perf_counter() - start, "policy": policy}


def plot(runs: list[dict], beta: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in zip(axes, ("attainment", "attainment_held_out"),
                              ("training prompts", "held-out prompts")):
        for method in dict.fromkeys(r["method"] for r in runs):
            points = sorted((r["labels"], r[key]) for r in runs if r["method"] == method)
            ax.plot(*zip(*points), marker="o", label=method)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set(xscale="log", xlabel="rater labels paid", title=f"Attainment on the {title} (beta {beta})")
    axes[0].set_ylabel("exact attainment (1 = the optimum pi*)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def save(runs: list[dict], args, argv) -> dict:
    """Write the runs so far to benchmarks/results/label_budget.json (and the notebook's cache)."""
    command = "python benchmarks/label_budget.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"command": command.strip(), "beta": args.beta, "seed": args.seed, "ppo_steps": args.ppo_steps,
           "threads": args.threads, "runs": runs}
    (ROOT / "benchmarks" / "results" / f"{args.name}.json").write_text(json.dumps(out, indent=1))
    if args.notebook_cache:
        (ROOT / "minirlhf" / "cached_runs" / "label_budget.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[500, 1000, 2000, 4000, 8000, 16000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=ALL_METHODS)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ppo-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="label_budget", help="results file name in benchmarks/results/")
    parser.add_argument("--notebook-cache", action="store_true",
                        help="also write minirlhf/cached_runs/label_budget.json (notebook 05 reads it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref, tokenizer = load_base_model()
    train = ExactEvaluator(ref, tokenizer, world.prompts("train"))
    held_out = ExactEvaluator(ref, tokenizer, world.prompts("held_out"))
    runs = []
    for budget in args.budgets:
        for method in args.methods:
            result = run(method, budget, args.beta, args.seed, args.ppo_steps, ref, tokenizer)
            policy = result.pop("policy")
            report = train.evaluate(policy, args.beta)
            runs.append({"method": method, "budget": budget, **result, "attainment": report["attainment"],
                         "attainment_held_out": held_out.evaluate(policy, args.beta)["attainment"],
                         "coverage": report["coverage"]})
            save(runs, args, argv)  # after every run: a crash later keeps what was measured
            r = runs[-1]
            print(f"{method:10s} budget {budget:6d}: {r['labels']:6d} labels, "
                  f"attainment {r['attainment']:.3f}, held-out {r['attainment_held_out']:.3f} "
                  f"({r['seconds']:.0f} s)", flush=True)
    out = save(runs, args, argv)
    results = ROOT / "benchmarks" / "results"
    lines = [f"`{out['command']}` (beta {args.beta}, seed {args.seed}, PPO {args.ppo_steps} steps)", "",
             "| method | budget | labels paid | attainment | held-out | seconds |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['budget']:,} | {r['labels']:,} | {r['attainment']:.3f} | "
              f"{r['attainment_held_out']:.3f} | {r['seconds']:.0f} |" for r in runs]
    (results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    plot(runs, args.beta, results / f"{args.name}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
