"""TRL's own DPOTrainer on minirlhf's world, scored exactly. Needs the extra: pip install -e ".[trl]".

    python examples/trl_dpo.py                        # minirlhf's offline DPO recipe, trained by TRL
    python examples/trl_dpo.py --recipe plain         # every weight, no NLL term (compare.PLAIN_DPO)
    python examples/trl_dpo.py --recipe trl           # TRL's own defaults (lr 1e-6, batch 8, 3 epochs)

Several processes, here on the CPU (gloo), or one per GPU (nccl), same script:

    torchrun --nproc_per_node 2 examples/trl_dpo.py
    accelerate launch --config_file examples/accelerate_cpu.yaml examples/trl_dpo.py
    accelerate launch examples/trl_dpo.py --model PATH --learning-rate 5e-7   # a real checkpoint, GPUs

The policy starts from the shipped SFT tiny GPT (or ``--model``), learns from the tutorial's preference
pairs (``minirlhf.export.preference_data()``: sampled from the SFT model, labelled by the simulated
rater) and is scored by :class:`minirlhf.integrations.trl.ExactEvaluationCallback`, whose
``exact/attainment`` appears in TRL's logs. Recipes: ``minirlhf`` is minirlhf's ``DPOConfig()``
(RPO's NLL term, the first block and the embeddings kept fixed); ``plain`` is
``minirlhf.compare.PLAIN_DPO``. Both have a counterpart measured with minirlhf's own trainer in
``benchmarks/results/dpo.json`` (``benchmarks/trl_side_by_side.py`` runs the two side by side).

The batch is global: pairs per optimizer step = per-device batch x processes x gradient accumulation
steps, so two processes train on the same batches as one (each takes half of every batch). The exact
evaluation runs on the main process, which alone prints the final line.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl import DPOConfig, DPOTrainer  # noqa: E402

from minirlhf import dpo  # noqa: E402
from minirlhf.compare import PLAIN_DPO  # noqa: E402
from minirlhf.export import preference_data  # noqa: E402
from minirlhf.integrations.trl import (ExactEvaluationCallback, check_launch, dpo_args, freeze_like,  # noqa: E402
                                       load_policy, per_device_batch, run_args, shared_dataset, world_size)

RECIPES = {"minirlhf": {}, "plain": PLAIN_DPO}
TRL_BATCH = DPOConfig.__dataclass_fields__["per_device_train_batch_size"].default
"""TRL's default batch (per device): the global batch of ``--recipe trl``."""


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES) + ["trl"], default="minirlhf")
    parser.add_argument("--model", default=None, help="a causal LM (default: the tiny GPT); give "
                        "--learning-rate with it")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="pairs per optimizer step, over all processes (default: the recipe's)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1,
                        help="split each batch further into this many passes per process")
    parser.add_argument("--max-steps", type=int, default=-1,
                        help="stop after this many optimizer steps (default: the recipe's epochs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=16, help="optimizer steps between evaluations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (per process)")
    parser.add_argument("--out", default="trl-dpo-output",
                        help="TRL's output_dir: the training data go to OUT/data (no checkpoints)")
    args = parser.parse_args(argv)
    check_launch()
    if args.model and args.learning_rate is None and args.recipe != "trl":
        parser.error("--model needs --learning-rate: the recipe's rate is the tiny GPT's, and a real "
                     "checkpoint wants one 100 to 1000 times smaller (e.g. --learning-rate 5e-7).")

    policy, ref_model, tokenizer = load_policy(args.model)
    rate = {"learning_rate": args.learning_rate} if args.learning_rate else {}
    batch = {"batch_size": args.batch_size} if args.batch_size else {}
    processes, accumulation = world_size(), args.gradient_accumulation_steps
    try:
        if args.recipe == "trl":  # TRL's own defaults (lr 1e-6, 3 epochs, ...): only beta, seed, batch set
            global_batch = args.batch_size or TRL_BATCH
            per_device = per_device_batch(global_batch, processes, accumulation, "pairs",
                                          "or change --batch-size")
            settings = {"beta": args.beta, "seed": args.seed, **rate,
                        "per_device_train_batch_size": per_device,
                        "gradient_accumulation_steps": accumulation}
        else:
            config = dpo.DPOConfig(beta=args.beta, seed=args.seed, **RECIPES[args.recipe], **rate, **batch)
            freeze_like(policy, config.frozen_blocks, config.embedding_lr_scale)
            global_batch, settings = config.batch_size, dpo_args(config, processes, accumulation)
    except ValueError as error:  # a batch that does not split over the processes: say so, exit 2
        parser.error(str(error))
    training_args = DPOConfig(output_dir=args.out, logging_steps=args.eval_every or 50,
                              max_steps=args.max_steps, precompute_ref_log_probs=True, **settings,
                              **run_args(args.threads))
    # The main process builds the pairs, into a folder where every process finds the cache file that
    # TRL writes the reference's log-probs into (see shared_dataset).
    pairs = shared_dataset(lambda: preference_data()["train"], os.path.join(args.out, "data"), training_args)
    if len(pairs) < global_batch:
        parser.error(f"{len(pairs)} preference pairs cannot fill one batch of {global_batch}: some process "
                     "would get no data. Lower --batch-size.")
    trainer = DPOTrainer(model=policy, ref_model=ref_model, processing_class=tokenizer, train_dataset=pairs,
                         args=training_args)
    callback = ExactEvaluationCallback(ref_model, tokenizer, args.beta, every=args.eval_every).attach(trainer)
    trainer.train()
    if not trainer.is_world_process_zero():
        return None
    final = callback.history[-1]
    print(f"TRL DPOTrainer, recipe {args.recipe!r}, beta {args.beta}, {processes} process(es), "
          f"{final['step']} optimizer steps: {callback.summary()}", flush=True)
    return final


if __name__ == "__main__":
    main()
