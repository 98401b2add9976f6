"""A fingerprint of training, to check that a refactor changed no number.

    python benchmarks/same_numbers.py                      # this checkout
    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python benchmarks/same_numbers.py   # the code at <commit>

Trains PPO with the true reward (PPO-GT) for 30 steps and offline DPO for one epoch, seed 0, one
thread, from the shipped SFT model, and prints the sum of each trained model's weights and of its
logits on France's prompt. Two checkouts whose code computes the same thing print the same line, to
the last digit, on the same machine.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from minirlhf import world  # noqa: E402
from minirlhf.dpo import DPOConfig, train_dpo  # noqa: E402
from minirlhf.ppo import PPOConfig, train_ppo  # noqa: E402
from minirlhf.preferences import default_preferences  # noqa: E402

try:
    from minirlhf.saved_models import load_base_model
except ImportError:  # code from before the split of models.py
    from minirlhf.models import load_base_model


def fingerprint(model, tokenizer) -> tuple[float, float]:
    """The sum of the weights (float64) and of the logits on France's prompt."""
    weights = sum(v.double().sum().item() for v in model.state_dict().values())
    with torch.no_grad():
        logits = model(**tokenizer(world.make_prompt("France"), return_tensors="pt")).logits.double().sum().item()
    return weights, logits


def main() -> None:
    torch.set_num_threads(1)
    ref, tokenizer = load_base_model()
    ppo = copy.deepcopy(ref)
    train_ppo(ppo, ref, tokenizer, world.prompts("train"), PPOConfig(steps=30, seed=0))
    dpo = copy.deepcopy(ref)
    train_dpo(dpo, ref, tokenizer, default_preferences()["train"], DPOConfig(seed=0, epochs=1))
    print("PPO-GT 30 steps: weights %.12g, logits %.12g" % fingerprint(ppo, tokenizer))
    print("DPO 1 epoch:     weights %.12g, logits %.12g" % fingerprint(dpo, tokenizer))


if __name__ == "__main__":
    main()
