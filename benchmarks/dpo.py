"""DPO against the exact optimum: attainment and leaked mass over seeds and betas, and step time.

    python benchmarks/dpo.py                      # offline DPO (defaults), beta 0.1 and 0.5, seeds 0 1 2
    python benchmarks/dpo.py --longer 5           # the same, trained 5 times longer: does it collapse?
    python benchmarks/dpo.py --methods offline plain online
    python benchmarks/dpo.py --only-timing --trl-python /work/venv-trl116/bin/python   # vs TRL 1.16

For each seed the preference data are the tutorial's (``default_preferences(seed=seed)``: 128 pairs
per training prompt sampled from the shipped SFT model and labelled by the Bradley-Terry rater,
80% of them to train on). Methods: ``offline`` is :func:`minirlhf.dpo.train_dpo` with
``DPOConfig(beta, seed)``; ``plain`` the same without the NLL term, every parameter trained
(:data:`minirlhf.compare.PLAIN_DPO`, as TRL's DPOTrainer runs it); ``online`` is
:func:`minirlhf.online_dpo.train_online_dpo` with its defaults and the rater, which counts its labels.
Attainment is exact on the training prompts and on the held-out prompts; "leak" is the probability
outside the candidate set (1 - coverage). The step time is the median of a DPO step on 16 pairs;
with ``--trl-python`` it alternates 3 rounds of it with TRL's DPOTrainer on the same model and
batch (``benchmarks/trl_dpo_peer.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from minirlhf import world
from minirlhf.compare import PLAIN_DPO
from minirlhf.dpo import DPOConfig, dpo_step, train_dpo
from minirlhf.pairs import encode_pairs, reference_logps
from minirlhf.online_dpo import OnlineDPOConfig, train_online_dpo
from minirlhf.training import frozen_blocks, fused_gelu
from minirlhf.optimum import ExactEvaluator
from minirlhf.preferences import default_preferences
from minirlhf.saved_models import load_base_model


def step_seconds(ref, tokenizer, data, batch_size: int = 16, repeats: int = 30) -> float:
    """Median wall time of one DPO step on ``batch_size`` pairs (reference log-probs precomputed)."""
    return statistics.median(step_times(ref, tokenizer, data, batch_size, repeats))


def step_times(ref, tokenizer, data, batch_size: int = 16, repeats: int = 30,
               frozen: int | None = None) -> list[float]:
    """Wall times of ``repeats`` DPO steps on ``batch_size`` pairs, the first 5 (warm-up) dropped.
    The step is :func:`minirlhf.dpo.train_dpo`'s (:func:`minirlhf.dpo.dpo_step` on packed pairs,
    fused AdamW, GPT-2's GELU as one kernel, the first ``frozen`` blocks kept: by default
    ``DPOConfig().frozen_blocks``), metrics included."""
    config = DPOConfig(beta=0.1, learning_rate=1e-4, progress=False)
    frozen = config.frozen_blocks if frozen is None else frozen
    policy = copy.deepcopy(ref)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, fused=True)
    encoded = encode_pairs(tokenizer, data)
    ref_chosen, ref_rejected = reference_logps(ref, encoded)
    n = len(data)
    generator = torch.Generator().manual_seed(0)
    times = []
    with fused_gelu(policy), frozen_blocks(policy, frozen):
        for step in range(repeats):
            idx = torch.randint(n, (batch_size,), generator=generator)
            start = time.perf_counter()
            dpo_step(policy, optimizer, encoded, idx, ref_chosen[idx], ref_rejected[idx], config, 1e-4, step)
            times.append(time.perf_counter() - start)
    return times[5:]  # the first steps warm up


def time_trl(python: str, steps: int = 30, setup: str = "defaults") -> list[float]:
    """Seconds per step of TRL 1.16's DPOTrainer (16 pairs), from its own venv, same threads as ours.
    ``setup``: TRL's ``defaults``, or ``lean`` (reference log-probs precomputed, no checkpointing)."""
    script = Path(__file__).with_name("trl_dpo_peer.py")
    result = subprocess.run([python, str(script), "--steps", str(steps), "--setup", setup,
                             "--threads", str(torch.get_num_threads())],
                            capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    if result.returncode != 0:
        raise RuntimeError(f"TRL peer failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds_per_step"]


def timing(ref, tokenizer, trl_python: str | None, rounds: int = 3, repeats: int = 30,
           trl_steps: int = 30) -> dict:
    """Median seconds per DPO step on 16 pairs: ours with the defaults and with every block trained
    (as TRL trains them), and TRL's with its defaults and lean; rounds alternate so that all see
    the same machine load."""
    data = default_preferences(progress=False)["train"]
    ours, ours_all_blocks, trl = [], [], {"defaults": [], "lean": []}
    for _ in range(rounds):
        ours += step_times(ref, tokenizer, data, repeats=repeats)
        ours_all_blocks += step_times(ref, tokenizer, data, repeats=repeats, frozen=0)
        for setup in trl if trl_python else ():
            trl[setup] += time_trl(trl_python, trl_steps, setup)
    out = {"ours_seconds_per_step": statistics.median(ours),
           "ours_every_block_trained_seconds_per_step": statistics.median(ours_all_blocks),
           "ours_samples": len(ours), "threads": torch.get_num_threads(), "batch_size": 16}
    for setup, times in trl.items() if trl_python else ():
        out[f"trl_{setup}_seconds_per_step"] = statistics.median(times)
        out[f"ratio_trl_{setup}_over_ours"] = statistics.median(times) / statistics.median(ours)
        out[f"ratio_trl_{setup}_over_ours_every_block_trained"] = (
            statistics.median(times) / statistics.median(ours_all_blocks))
    return out


def run(seed: int, beta: float, method: str, ref, tokenizer, evaluators, longer: int = 1) -> dict:
    """One run of ``method`` (``offline``, ``plain`` or ``online``) with its defaults (epochs or
    rounds times ``longer``); exact figures at the end."""
    data = default_preferences(seed=seed, progress=False)["train"]
    start = time.perf_counter()
    if method == "online":
        config = OnlineDPOConfig(beta=beta, seed=seed, progress=False)
        config.rounds *= longer
        policy, history = train_online_dpo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"),
                                           world.SimulatedRater(seed=seed), config)
        labels = history[-1]["rater_labels"]
    else:
        config = DPOConfig(beta=beta, seed=seed, progress=False, **(PLAIN_DPO if method == "plain" else {}))
        config.epochs *= longer
        policy, history = train_dpo(copy.deepcopy(ref), ref, tokenizer, data, config)
        labels = len(data)
    row = {"method": method + (f" x{longer}" if longer > 1 else ""), "seed": seed, "beta": beta,
           "steps": history[-1]["step"], "rater_labels": labels,
           "seconds": round(time.perf_counter() - start, 1)}
    for split, evaluator in evaluators.items():
        report = evaluator.evaluate(policy, beta)
        row[f"{split}_attainment"] = round(report["attainment"], 4)
        row[f"{split}_leak"] = round(1 - report["coverage"], 4)
        row[f"{split}_p_correct"] = round(report["p_correct"], 4)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--methods", nargs="+", default=["offline"], choices=["offline", "plain", "online"])
    parser.add_argument("--longer", type=int, default=1, help="train this many times longer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows and the summary to this file")
    parser.add_argument("--trl-python", help="python of a venv with trl==1.16: also time TRL's DPOTrainer")
    parser.add_argument("--only-timing", action="store_true", help="skip the attainment runs")
    parser.add_argument("--repeats", type=int, default=30, help="our timed steps per round (5 warm up)")
    parser.add_argument("--trl-steps", type=int, default=30, help="TRL's steps per round (5 warm up)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref, tokenizer = load_base_model()
    command = "python benchmarks/dpo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.only_timing or args.trl_python:
        times = timing(ref, tokenizer, args.trl_python, repeats=args.repeats, trl_steps=args.trl_steps)
        print(json.dumps(times), flush=True)
        if args.only_timing:
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"timing": times, "command": command}, f, indent=2)
            return
    evaluators = {"train": ExactEvaluator(ref, tokenizer, world.prompts("train")),
                  "held_out": ExactEvaluator(ref, tokenizer, world.prompts("held_out"))}
    rows = []
    for beta in args.betas:
        for seed in args.seeds:
            for method in args.methods:
                rows.append(run(seed, beta, method, ref, tokenizer, evaluators, args.longer))
                print(json.dumps(rows[-1]), flush=True)
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for beta in args.betas:
            group = [r for r in rows if r["method"] == method and r["beta"] == beta]
            entry = {"method": method, "beta": beta, "seeds": len(group)}
            for key in ("train_attainment", "held_out_attainment", "train_leak", "held_out_leak", "seconds"):
                values = [r[key] for r in group]
                entry[f"{key}_median"] = round(statistics.median(values), 4)
                entry[f"{key}_min" if "attainment" in key else f"{key}_max"] = round(
                    min(values) if "attainment" in key else max(values), 4)
            summary.append(entry)
    if args.trl_python:
        step = times["ours_seconds_per_step"]
    else:
        step = step_seconds(ref, tokenizer, default_preferences(progress=False)["train"],
                            repeats=args.repeats)
    print("\n| method | beta | train attainment (median, min) | held-out attainment (median, min) "
          "| leak train (median, max) | seconds |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['method']} | {s['beta']} "
              f"| {s['train_attainment_median']:.3f}, {s['train_attainment_min']:.3f} "
              f"| {s['held_out_attainment_median']:.3f}, {s['held_out_attainment_min']:.3f} "
              f"| {s['train_leak_median']:.4f}, {s['train_leak_max']:.4f} | {s['seconds_median']:.0f} |")
    print(f"\nDPO step on 16 pairs: {1000 * step:.1f} ms (median)")
    if args.trl_python:
        for setup in ("defaults", "lean"):
            every_block = times[f"ratio_trl_{setup}_over_ours_every_block_trained"]
            print(f"TRL ({setup}) {times[f'trl_{setup}_seconds_per_step'] * 1000:.1f} ms, ratio TRL / ours "
                  f"{times[f'ratio_trl_{setup}_over_ours']:.2f} ({every_block:.2f} with every block trained)")
    if args.json:
        result = {"rows": rows, "summary": summary, "step_seconds_16_pairs": step, "command": command}
        if args.trl_python:
            result["timing"] = times
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
