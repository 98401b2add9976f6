"""TRL's own DPOTrainer on minirlhf's world, scored exactly. Needs the extra: pip install -e ".[trl]".

    python examples/trl_dpo.py                        # minirlhf's offline DPO recipe, trained by TRL
    python examples/trl_dpo.py --recipe plain         # every weight, no NLL term (compare.PLAIN_DPO)
    python examples/trl_dpo.py --recipe trl           # TRL's own defaults (lr 1e-6, batch 8, 3 epochs)
    accelerate launch examples/trl_dpo.py --model PATH --learning-rate 5e-7   # a real checkpoint, GPUs

The policy starts from the shipped SFT tiny GPT (or ``--model``), learns from the tutorial's preference
pairs (``minirlhf.export.preference_data()``: sampled from the SFT model, labelled by the simulated
rater) and is scored by :class:`minirlhf.integrations.trl.ExactEvaluationCallback`, whose
``exact/attainment`` appears in TRL's logs. Recipes: ``minirlhf`` is minirlhf's ``DPOConfig()``
(RPO's NLL term, the first block and the embeddings kept fixed); ``plain`` is
``minirlhf.compare.PLAIN_DPO``. Both have a counterpart measured with minirlhf's own trainer in
``benchmarks/results/dpo.json`` (``benchmarks/trl_side_by_side.py`` runs the two side by side).
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl import DPOConfig, DPOTrainer  # noqa: E402

from minirlhf import dpo  # noqa: E402
from minirlhf.compare import PLAIN_DPO  # noqa: E402
from minirlhf.export import preference_data  # noqa: E402
from minirlhf.integrations.trl import (ExactEvaluationCallback, dpo_args, freeze_like, load_policy,  # noqa: E402
                                       run_args)

RECIPES = {"minirlhf": {}, "plain": PLAIN_DPO}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES) + ["trl"], default="minirlhf")
    parser.add_argument("--model", default=None, help="a causal LM (default: the tiny GPT)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=16, help="optimizer steps between evaluations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="trl-dpo-output", help="TRL's output_dir (nothing saved)")
    args = parser.parse_args(argv)

    policy, ref_model, tokenizer = load_policy(args.model)
    if args.recipe == "trl":  # TRL's own defaults (lr 1e-6, batch 8, 3 epochs, ...): only beta and seed set
        settings = {"beta": args.beta, "seed": args.seed,
                    **({"learning_rate": args.learning_rate} if args.learning_rate else {})}
    else:
        config = dpo.DPOConfig(beta=args.beta, seed=args.seed, **RECIPES[args.recipe],
                               **({"learning_rate": args.learning_rate} if args.learning_rate else {}))
        freeze_like(policy, config.frozen_blocks, config.embedding_lr_scale)
        settings = dpo_args(config)
    trainer = DPOTrainer(
        model=policy, ref_model=ref_model, processing_class=tokenizer,
        train_dataset=preference_data()["train"],
        args=DPOConfig(output_dir=args.out, logging_steps=args.eval_every or 50,
                       precompute_ref_log_probs=True, **settings, **run_args(args.threads)))
    callback = ExactEvaluationCallback(ref_model, tokenizer, args.beta, every=args.eval_every).attach(trainer)
    trainer.train()
    final = callback.history[-1]
    print(f"TRL DPOTrainer, recipe {args.recipe!r}, beta {args.beta}, {final['step']} steps: "
          f"{callback.summary()}")
    return final


if __name__ == "__main__":
    main()
