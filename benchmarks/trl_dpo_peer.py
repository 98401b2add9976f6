"""TRL 1.16's DPOTrainer on minirlhf's tiny model, data and batch: seconds per optimizer step.

Run it with the python of a *separate* venv that has ``trl==1.16.0`` (TRL is not a dependency of
minirlhf)::

    python -m venv /work/venv-trl116
    /work/venv-trl116/bin/pip install torch==2.13.0 trl==1.16.0
    /work/venv-trl116/bin/python benchmarks/trl_dpo_peer.py --steps 30

``benchmarks/dpo.py --trl-python /work/venv-trl116/bin/python`` runs it for you, alternating with
minirlhf's own step timing. It loads the shipped SFT checkpoint as policy and reference, trains on
the same preference pairs as ``benchmarks/dpo.py`` (``default_preferences()["train"]``, 256 pairs,
sampled by minirlhf's own code from the repository, which needs only torch and datasets) with 16
pairs per step, beta 0.1, CPU, and prints one JSON line with the wall-clock seconds of each
optimizer step, timed between TRL's ``on_step_end`` callbacks (the first 5 steps warm up and are
dropped). Evaluation, saving, logging and reporting are off.

``--setup defaults`` (the default) leaves TRL's own defaults for the two settings that matter here:
the reference model runs at every step (``precompute_ref_log_probs=False``) and gradient
checkpointing is on. ``--setup lean`` matches what minirlhf's timed step does (one forward of
chosen and rejected, backward, AdamW): reference log-probs precomputed before training, and
gradient checkpointing, pure recomputation on a model this small, off.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # minirlhf from this checkout (it needn't be installed in the TRL venv)

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from trl_timer import StepTimer  # noqa: E402  (benchmarks/, beside this script)

from minirlhf.integrations.trl import load_policy  # noqa: E402
from minirlhf.preferences import default_preferences  # noqa: E402

BATCH_SIZE = 16
WARMUP = 5



SETUPS = {"defaults": {},  # TRL's: reference forward every step, gradient checkpointing on
          "lean": {"precompute_ref_log_probs": True, "gradient_checkpointing": False}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--setup", choices=["defaults", "lean"], default="defaults")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf_logging.set_verbosity_error()

    # The shipped SFT model, a frozen copy as reference (with None TRL would use the policy itself for the
    # precompute), and its tokenizer (pad id 0, eos id 1); TRL's collator pads prompts and answers itself.
    policy, ref_policy, tokenizer = load_policy()

    pairs = default_preferences(progress=False)["train"]  # the pairs of benchmarks/dpo.py
    train = Dataset.from_dict({k: list(pairs[k]) for k in ("prompt", "chosen", "rejected")})

    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out, per_device_train_batch_size=BATCH_SIZE, gradient_accumulation_steps=1,
            max_steps=args.steps, beta=0.1, loss_type=["sigmoid"], learning_rate=1e-4,
            max_grad_norm=1.0, **SETUPS[args.setup],
            use_cpu=True, bf16=False, fp16=False, report_to="none", logging_strategy="no",
            save_strategy="no", eval_strategy="no", disable_tqdm=True, seed=0,
            dataloader_num_workers=0,
        )
        trainer = DPOTrainer(model=policy, ref_model=ref_policy, args=config, train_dataset=train,
                             processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics: keep stdout one JSON line
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    print(json.dumps({"seconds_per_step": timer.seconds[WARMUP:],
                      "trl_version": __import__("trl").__version__, "batch_size": BATCH_SIZE,
                      "setup": args.setup}))


if __name__ == "__main__":
    main()
