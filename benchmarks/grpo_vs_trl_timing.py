"""GRPO's update step, minirlhf against TRL 1.16's GRPOTrainer at the same settings. Needs the ``trl`` extra.

    python benchmarks/grpo_vs_trl_timing.py                # 30 steps, 3 runs each, alternating, 1 thread

One minirlhf GRPO step samples 16 prompts x 4 answers and makes ``epochs x minibatches`` = 8 optimizer
steps on them; TRL, given ``minirlhf.integrations.trl.grpo_args``, generates once every 8 optimizer
steps on the same number of answers. Both run on the shipped SFT model with the true reward, k3 in the
loss, the embeddings frozen (``examples/trl_grpo.py``'s recipe). For each run the time of a step is
split in two by wrapping the library's own functions:

* **update**: minirlhf's ``grpo_update``; TRL's ``training_step`` minus the time spent in its
  ``_generate_and_score_completions`` (8 optimizer steps, loss, backward, optimizer);
* **sampling and scoring**: the rest of a step (generation, log-probs of policy and reference, reward).

It also times a **floor**: minirlhf's update with GRPO's loss replaced by the plainest policy-gradient
loss, ``-sum(advantage * log pi(token)) / tokens``. What is left (forward, backward, gradient clipping,
Adam, for the same 8 minibatches of the same model) is work any GRPO update does, TRL's included; so
``TRL update / floor`` bounds the speed-up over TRL that any GRPO loss and training loop could show,
short of a faster model (compiled, or on other hardware).

Prints seconds per minirlhf step (= 8 TRL optimizer steps), medians over the runs, and the ratios;
writes ``benchmarks/results/grpo_vs_trl_timing.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import torch  # noqa: E402
import trl  # noqa: E402
import trl_grpo  # noqa: E402  (examples/: its RECIPE)
from demo import cpu_model  # noqa: E402  (benchmarks/)

from minirlhf import grpo, world  # noqa: E402
from minirlhf.export import prompt_data  # noqa: E402
from minirlhf.integrations.trl import (freeze_like, grpo_args, load_policy, run_args,  # noqa: E402
                                       true_reward_func)
from minirlhf.saved_models import load_base_model  # noqa: E402


def timed(function, spent: list):
    """``function``, adding the seconds of each call to ``spent``."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)
    return wrapper


def plain_policy_gradient_loss(logprobs, old_logprobs, ref_logprobs, advantages, response_mask, *args,
                                **kwargs):
    """The floor's loss: no ratio, no clipping, no KL; only what every policy-gradient update computes."""
    loss = -(logprobs * advantages[:, None] * response_mask).sum() / response_mask.sum()
    return loss, {"loss/policy": loss.detach()}


def minirlhf_run(steps: int, seed: int, floor: bool = False) -> dict:
    """``floor``: the same run with :func:`plain_policy_gradient_loss` in place of GRPO's loss."""
    ref, tokenizer = load_base_model()
    updates = []
    original, original_loss = grpo.grpo_update, grpo.grpo_loss
    grpo.grpo_update = timed(original, updates)  # train_grpo calls it through the module
    if floor:
        grpo.grpo_loss = plain_policy_gradient_loss
    try:
        config = grpo.GRPOConfig(steps=steps, seed=seed, progress=False, **trl_grpo.RECIPE)
        start = time.perf_counter()
        grpo.train_grpo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"), config)
        total = time.perf_counter() - start
    finally:
        grpo.grpo_update, grpo.grpo_loss = original, original_loss
    return {"step": total / steps, "update": sum(updates) / steps}


def trl_run(steps: int, seed: int, threads: int) -> dict:
    config = grpo.GRPOConfig(steps=steps, seed=seed, **trl_grpo.RECIPE)
    policy, _, tokenizer = load_policy()
    freeze_like(policy, config.frozen_blocks, config.embedding_lr_scale)
    with tempfile.TemporaryDirectory() as out:
        trainer = trl.GRPOTrainer(
            model=policy, reward_funcs=true_reward_func, processing_class=tokenizer,
            train_dataset=prompt_data("train"),
            args=trl.GRPOConfig(output_dir=out, logging_steps=10_000, **grpo_args(config),
                                **run_args(threads)))
        generation, training = [], []
        trainer._generate_and_score_completions = timed(trainer._generate_and_score_completions, generation)
        trainer.training_step = timed(trainer.training_step, training)
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    return {"step": total / steps, "update": (sum(training) - sum(generation)) / steps}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30,
                        help="minirlhf steps per run (each is 8 TRL optimizer steps)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = {"minirlhf": [], "trl": [], "floor": []}
    for run in range(args.runs):  # alternate, so that a busy spell hits all three
        runs["minirlhf"].append(minirlhf_run(args.steps, run))
        runs["trl"].append(trl_run(args.steps, run, args.threads))
        runs["floor"].append(minirlhf_run(args.steps, run, floor=True))
        print(json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
    medians = {lib: {key: statistics.median(r[key] for r in rs) for key in ("step", "update")}
               for lib, rs in runs.items()}
    ratios = {key: medians["trl"][key] / medians["minirlhf"][key] for key in ("step", "update")}
    ratios["update_trl_over_floor"] = medians["trl"]["update"] / medians["floor"]["update"]
    ratios["update_minirlhf_over_floor"] = medians["minirlhf"]["update"] / medians["floor"]["update"]
    print(f"seconds per step of 64 answers (8 optimizer steps), medians of {args.runs} runs, "
          f"{args.threads} thread(s), {cpu_model()}:")
    for lib, m in medians.items():
        print(f"  {lib:9s} update {m['update']:.3f}   whole step {m['step']:.3f}")
    print(f"  TRL / minirlhf: update {ratios['update']:.2f}x, whole step {ratios['step']:.2f}x")
    print(f"  update / floor: minirlhf {ratios['update_minirlhf_over_floor']:.2f}x, "
          f"TRL {ratios['update_trl_over_floor']:.2f}x (the most a loss and loop could gain on TRL)")
    (ROOT / "benchmarks" / "results" / "grpo_vs_trl_timing.json").write_text(json.dumps({
        "command": " ".join(["python benchmarks/grpo_vs_trl_timing.py", *(argv or sys.argv[1:])]),
        "runs": runs, "medians": medians, "ratios": ratios, "threads": args.threads, "cpu": cpu_model(),
        "trl_version": trl.__version__, "torch_version": torch.__version__}, indent=1) + "\n")


if __name__ == "__main__":
    main()
