"""TRL 1.12's experimental PPOTrainer on minirlhf's tiny model and batch: seconds per update.

Run it with the python of a *separate* venv that has ``trl==1.12.0`` (TRL is not a dependency of
minirlhf, and 1.12 is the last release with PPO)::

    python -m venv /work/venv-trl112
    /work/venv-trl112/bin/pip install torch==2.13.0 trl==1.12.0
    /work/venv-trl112/bin/python benchmarks/trl_ppo_peer.py --steps 6

It loads the shipped SFT checkpoint (policy, reference, and a value and a reward model built from its
transformer with a fresh scalar head, as TRL's examples do), trains on the toy world's training
prompts with the same batch as minirlhf's default (32 rollouts, 4 PPO epochs, 2 minibatches, 16 new
tokens at most, temperature 1, CPU), and prints one JSON line with the wall-clock seconds of each
update (rollout + scoring + optimisation), timed between TRL's ``on_step_end`` callbacks. Only the
time is measured: the reward model here is untrained, so the policy learns nothing meaningful.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for minirlhf.world only (pure Python): the prompts

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,  # noqa: E402
                          PreTrainedTokenizerFast)
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: E402

from trl_timer import StepTimer  # noqa: E402  (benchmarks/, beside this script)

from minirlhf import world  # noqa: E402

CHECKPOINT = REPO / "minirlhf" / "checkpoints" / "sft-tiny-gpt"



def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tokenizer = PreTrainedTokenizerFast.from_pretrained(CHECKPOINT)
    tokenizer.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(CHECKPOINT)
    ref_policy = copy.deepcopy(policy)  # with None TRL would try to download the model again
    value_model = AutoModelForSequenceClassification.from_pretrained(CHECKPOINT, num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(CHECKPOINT, num_labels=1)
    for model in (policy, ref_policy, value_model, reward_model):
        model.config.pad_token_id = tokenizer.pad_token_id

    prompts = world.prompts("train")
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    train = Dataset.from_dict({"input_ids": ids * 8})
    evaluation = Dataset.from_dict({"input_ids": ids[:4]})  # TRL 1.12 insists on one

    with tempfile.TemporaryDirectory() as out:
        config = PPOConfig(
            output_dir=out, per_device_train_batch_size=32, gradient_accumulation_steps=1,
            num_mini_batches=2, num_ppo_epochs=4, total_episodes=32 * args.steps,
            local_rollout_forward_batch_size=32, response_length=16, temperature=1.0,
            stop_token="eos", learning_rate=3e-4, kl_coef=0.1, num_sample_generations=0,
            use_cpu=True, bf16=False, fp16=False, report_to="none", logging_steps=1,
            save_strategy="no", seed=0, dataloader_num_workers=0,
        )
        trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                             reward_model=reward_model, value_model=value_model, train_dataset=train,
                             eval_dataset=evaluation)
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
    seconds = timer.seconds[1:]  # the first update warms up
    print(json.dumps({"trl_version": __import__("trl").__version__, "seconds_per_update": seconds}))


if __name__ == "__main__":
    main()
