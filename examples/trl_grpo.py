"""TRL's own GRPOTrainer on minirlhf's world, with the true reward, scored exactly. Needs the extra:
pip install -e ".[trl]".

    python examples/trl_grpo.py                       # the tiny GPT on a CPU
    python examples/trl_grpo.py --steps 300           # longer

Several processes, here on the CPU (gloo), or one per GPU (nccl), same script:

    torchrun --nproc_per_node 2 examples/trl_grpo.py
    accelerate launch --config_file examples/accelerate_cpu.yaml examples/trl_grpo.py
    accelerate launch examples/trl_grpo.py --model PATH --learning-rate 1e-6   # a real checkpoint, GPUs

The policy starts from the shipped SFT tiny GPT (or ``--model``) and learns from the world's true
reward (:func:`minirlhf.integrations.trl.true_reward_func`, a verifiable reward: no reward model) on
the training prompts; :class:`minirlhf.integrations.trl.ExactEvaluationCallback` writes the exact
``exact/attainment`` into TRL's logs. The settings are minirlhf's ``GRPOConfig(kl="loss")`` (k3 in the
loss, as TRL does) with the embeddings kept fixed (TRL trains all weights at one rate), turned into
TRL's names by :func:`minirlhf.integrations.trl.grpo_args`; ``--steps`` counts minirlhf's steps (one
batch of answers each), TRL's ``max_steps`` is ``epochs x minibatches`` times more.
``benchmarks/trl_side_by_side.py`` runs minirlhf's own ``train_grpo`` at the same settings.

The batch is global: each minirlhf step samples ``--prompts-per-step`` distinct prompts x 4 answers,
over all processes together, and each optimizer step trains on a share of them that is split as
per-device batch x processes x gradient accumulation steps. So two processes sample and train on as
many answers per step as one (each process half of them, with its own random draws). The exact
evaluation runs on the main process, which alone prints the final line.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from minirlhf import grpo  # noqa: E402
from minirlhf.export import prompt_data  # noqa: E402
from minirlhf.integrations.trl import (ExactEvaluationCallback, check_launch, freeze_like, grpo_args,  # noqa: E402
                                       load_policy, run_args, true_reward_func, world_size)

RECIPE = {"kl": "loss", "embedding_lr_scale": 0.0}
"""minirlhf's GRPOConfig fields that differ from its defaults, so that TRL can train alike."""


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a causal LM (default: the tiny GPT); give "
                        "--learning-rate with it")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=200, help="batches of answers (minirlhf's steps)")
    parser.add_argument("--prompts-per-step", type=int, default=grpo.GRPOConfig.prompts_per_step,
                        help="distinct prompts sampled per step, over all processes")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1,
                        help="split each optimizer step's answers further into this many passes per process")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: min(3e-4, 1e-4 / beta)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=200, help="optimizer steps between evaluations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (per process)")
    parser.add_argument("--out", default="trl-grpo-output", help="TRL's output_dir (nothing saved)")
    args = parser.parse_args(argv)
    check_launch()
    if args.model and args.learning_rate is None:
        parser.error("--model needs --learning-rate: the default is the tiny GPT's rate, and a real "
                     "checkpoint wants one 100 to 1000 times smaller (e.g. --learning-rate 1e-6).")
    prompts = prompt_data("train")
    if args.prompts_per_step > len(prompts):
        parser.error(f"--prompts-per-step {args.prompts_per_step} is more than the {len(prompts)} training "
                     "prompts: TRL would find no full batch and make no optimizer step. Lower it.")

    config = grpo.GRPOConfig(beta=args.beta, steps=args.steps, seed=args.seed, **RECIPE,
                             learning_rate=args.learning_rate,
                             prompts_per_step=args.prompts_per_step)
    processes = world_size()
    try:
        settings = grpo_args(config, processes, args.gradient_accumulation_steps)
    except ValueError as error:  # answers per optimizer step that do not split over the processes: exit 2
        parser.error(str(error))
    policy, ref_model, tokenizer = load_policy(args.model)
    freeze_like(policy, config.frozen_blocks, config.embedding_lr_scale)
    trainer = GRPOTrainer(
        model=policy, reward_funcs=true_reward_func, processing_class=tokenizer, train_dataset=prompts,
        args=GRPOConfig(output_dir=args.out, logging_steps=args.eval_every or 50, **settings,
                        **run_args(args.threads)))
    callback = ExactEvaluationCallback(ref_model, tokenizer, args.beta, every=args.eval_every).attach(trainer)
    trainer.train()
    if not trainer.is_world_process_zero():
        return None
    final = callback.history[-1]
    print(f"TRL GRPOTrainer, beta {args.beta}, {args.steps} batches, {processes} process(es), "
          f"{final['step']} optimizer steps: {callback.summary()}", flush=True)
    return final


if __name__ == "__main__":
    main()
