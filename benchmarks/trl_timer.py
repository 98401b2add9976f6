"""The step timer that both TRL peer scripts (``trl_ppo_peer.py``, ``trl_dpo_peer.py``) hand to a
TRL trainer. It imports only ``transformers``, so it works in each peer's own venv."""

import time

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall-clock seconds between consecutive optimizer steps (PPO: updates), timed between the
    trainer's ``on_step_end`` callbacks; the clock starts at ``on_train_begin`` (or at creation)."""

    def __init__(self):
        self.stamps = [time.perf_counter()]

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())

    @property
    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]
