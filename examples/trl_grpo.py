"""TRL's own GRPOTrainer on minirlhf's world, with the true reward, scored exactly. Needs the extra:
pip install -e ".[trl]".

    python examples/trl_grpo.py                       # the tiny GPT on a CPU
    python examples/trl_grpo.py --steps 300           # longer
    accelerate launch examples/trl_grpo.py --model PATH --learning-rate 1e-6   # a real checkpoint, GPUs

The policy starts from the shipped SFT tiny GPT (or ``--model``) and learns from the world's true
reward (:func:`minirlhf.integrations.trl.true_reward_func`, a verifiable reward: no reward model) on
the training prompts; :class:`minirlhf.integrations.trl.ExactEvaluationCallback` writes the exact
``exact/attainment`` into TRL's logs. The settings are minirlhf's ``GRPOConfig(kl="loss")`` (k3 in the
loss, as TRL does) with the embeddings kept fixed (TRL trains all weights at one rate), turned into
TRL's names by :func:`minirlhf.integrations.trl.grpo_args`; ``--steps`` counts minirlhf's steps (one
batch of answers each), TRL's ``max_steps`` is ``epochs x minibatches`` times more.
``benchmarks/trl_side_by_side.py`` runs minirlhf's own ``train_grpo`` at the same settings.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from minirlhf import grpo  # noqa: E402
from minirlhf.export import prompt_data  # noqa: E402
from minirlhf.integrations.trl import (ExactEvaluationCallback, freeze_like, grpo_args, load_policy,  # noqa: E402
                                       run_args, true_reward_func)

RECIPE = {"kl": "loss", "embedding_lr_scale": 0.0}
"""minirlhf's GRPOConfig fields that differ from its defaults, so that TRL can train alike."""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a causal LM (default: the tiny GPT)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=200, help="batches of answers (minirlhf's steps)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: min(3e-4, 1e-4 / beta)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=200, help="optimizer steps between evaluations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="trl-grpo-output", help="TRL's output_dir (nothing saved)")
    args = parser.parse_args(argv)

    config = grpo.GRPOConfig(beta=args.beta, steps=args.steps, seed=args.seed,
                             learning_rate=args.learning_rate, **RECIPE)
    policy, ref_model, tokenizer = load_policy(args.model)
    freeze_like(policy, config.frozen_blocks, config.embedding_lr_scale)
    trainer = GRPOTrainer(
        model=policy, reward_funcs=true_reward_func, processing_class=tokenizer,
        train_dataset=prompt_data("train"),
        args=GRPOConfig(output_dir=args.out, logging_steps=args.eval_every or 50, **grpo_args(config),
                        **run_args(args.threads)))
    callback = ExactEvaluationCallback(ref_model, tokenizer, args.beta, every=args.eval_every).attach(trainer)
    trainer.train()
    final = callback.history[-1]
    print(f"TRL GRPOTrainer, beta {args.beta}, {args.steps} batches ({final['step']} optimizer steps): "
          f"{callback.summary()}")
    return final


if __name__ == "__main__":
    main()
