"""One batch of answers, two update loops: minirlhf's ``grpo_update`` and TRL 1.16's ``GRPOTrainer``.

    python benchmarks/lockstep_update.py                      # GRPO and GSPO, one batch each

The scoreboard (``docs/variants.md``) compares whole runs, whose answers the two libraries sample with
different random streams. This script takes the sampling out: minirlhf samples one batch of answers
(16 training prompts x 4) from the SFT model, and both libraries update a copy of the same model on
that very batch, with the config of the scoreboard's pair (:func:`scoreboard.trl_config`), one
minibatch (TRL shuffles single answers into its minibatches, minirlhf deals whole groups: with one
minibatch both see the whole batch), no warm-up and a constant rate over the batch's passes. TRL's
trainer gets the batch through its ``_prepare_inputs``, in TRL's layout (prompt and completion ids,
masks, advantages, old and reference log-probs per completion token); everything after that is TRL's
own: its loss, its optimizer (AdamW), its gradient clipping, its passes (``num_iterations``).

Per method it records the largest difference between the two updated models' parameters, against the
largest move of minirlhf's, and each library's clip fraction. Writes
``benchmarks/results/lockstep_update.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from scoreboard import RESULTS, trl_config  # noqa: E402  (benchmarks/, beside this script)

from minirlhf import world  # noqa: E402
from minirlhf.grpo import group_advantages, grpo_update, rollout_groups, sequence_rewards  # noqa: E402
from minirlhf.rl import score_rollouts  # noqa: E402
from minirlhf.saved_models import load_base_model  # noqa: E402
from minirlhf.training import embedding_param_groups, frozen_blocks, fused_gelu, seed_everything  # noqa: E402


def one_batch(config, ref, tokenizer, seed: int) -> tuple[dict, torch.Tensor]:
    """minirlhf's step 1-3 on 16 training prompts: the batch of answers and their advantages."""
    generator = seed_everything(seed)
    with fused_gelu(ref):
        batch = rollout_groups(ref, ref, tokenizer, world.prompts("train")[:config.prompts_per_step], config,
                               generator)
    rewards = sequence_rewards(batch, score_rollouts(batch), config, config.beta)
    return batch, group_advantages(rewards, config.group_size, config.advantage)


def minirlhf_update(config, ref, batch, advantages) -> tuple[torch.nn.Module, float]:
    """minirlhf's step 4 on a copy of ``ref``; returns the model and its mean clip fraction."""
    policy = copy.deepcopy(ref).eval()
    rate = config.policy_learning_rate()
    optimizer = torch.optim.Adam(embedding_param_groups(policy, rate, config.embedding_lr_scale), lr=rate,
                                 eps=config.adam_eps)
    with fused_gelu(policy), frozen_blocks(policy, config.frozen_blocks):
        stats = grpo_update(policy, optimizer, batch, advantages, config, torch.Generator().manual_seed(0))
    return policy, stats["policy/clipfrac"]


def trl_update(config, args: dict, ref, tokenizer, batch, advantages) -> tuple[torch.nn.Module, list[float]]:
    """TRL's GRPOTrainer on a copy of ``ref``, fed ``batch``; returns the model and its clip fractions."""
    import trl

    from minirlhf.export import prompt_data
    from minirlhf.integrations.trl import freeze_like, run_args, true_reward_func

    ids, attention, mask = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    start = int(mask.argmax(-1).min())  # the first response column: prompts are left-padded to one width
    if not bool((mask[:, :start] == 0).all()):
        raise RuntimeError("The prompts do not end at one column: this layout cannot be split for TRL.")
    inputs = {"prompt_ids": ids[:, :start], "prompt_mask": attention[:, :start],
              "completion_ids": ids[:, start:], "completion_mask": mask[:, start:].long(),
              "advantages": advantages, "old_per_token_logps": batch["logprobs"][:, start:],
              "ref_per_token_logps": batch["ref_logprobs"][:, start:], "num_items_in_batch": mask.sum()}
    policy = freeze_like(copy.deepcopy(ref).train(), config.frozen_blocks, config.embedding_lr_scale)
    args = {**args, "max_steps": config.epochs, "warmup_steps": 0, "lr_scheduler_type": "constant",
            "logging_steps": 1}
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[true_reward_func], processing_class=tokenizer,
                              train_dataset=prompt_data("train"),
                              args=trl.GRPOConfig(output_dir=tempfile.mkdtemp(prefix="lockstep-"), **args,
                                                  **run_args(1)))
    trainer._prepare_inputs = lambda _: inputs  # the batch, instead of TRL's own sampling
    trainer.train()
    clips = [row["clip_ratio/region_mean"] for row in trainer.state.log_history if "clip_ratio/region_mean" in row]
    return trainer.model, clips


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["grpo", "gspo"],
                        help="scoreboard TRL methods of the GRPO family (run with one minibatch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "lockstep_update.json")
    args = parser.parse_args(argv)
    from minirlhf.integrations.trl import grpo_args

    torch.set_num_threads(1)
    ref, tokenizer = load_base_model()
    rows = []
    for name in args.methods:
        config, _ = trl_config(name, args.seed, 1)
        config = dataclasses.replace(config, minibatches=1, warmup_steps=0)
        batch, advantages = one_batch(config, ref, tokenizer, args.seed)
        ours, our_clip = minirlhf_update(config, ref, batch, advantages)
        theirs, their_clips = trl_update(config, grpo_args(config), ref, tokenizer, batch, advantages)
        start = dict(ref.named_parameters())
        difference = max((a - b).abs().max().item()
                         for (_, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()))
        move = max((p - start[k]).abs().max().item() for k, p in ours.named_parameters())
        rows.append({"method": name, "passes": config.epochs, "answers": int(batch["input_ids"].shape[0]),
                     "max_parameter_difference": difference, "max_parameter_move": move,
                     "minirlhf_clipfrac_mean": our_clip, "trl_clipfrac_mean": sum(their_clips) / len(their_clips)})
        print(f"{name}: largest difference {difference:.2e} against a largest move of {move:.2e}; clip fraction "
              f"minirlhf {our_clip:.3f}, TRL {rows[-1]['trl_clipfrac_mean']:.3f}", flush=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/lockstep_update.py", "seed": args.seed,
                                    "torch": torch.__version__, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
