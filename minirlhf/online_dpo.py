"""Online (iterative) DPO: the DPO loss on *fresh* pairs, sampled from the current policy and rated
as training goes (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback";
TRL's ``OnlineDPOTrainer``). Each round is::

    1. sample    two answers per prompt from the current policy (at a temperature above 1, so that
                 rare and malformed answers are sampled too); pairs of identical answers are dropped
    2. rate      the ``rater`` labels each pair: this costs one label per pair, counted in
                 ``rater_labels``
    3. learn     the DPO loss of :mod:`minirlhf.dpo` on these pairs (one step with the defaults)

Unlike offline DPO, it sees the answers the policy is drifting to, and pushes the bad ones down;
the price is a rater on call during training and many more labels. Why each default:
docs/defaults.md, "Online DPO".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minirlhf.checks import check_config
from minirlhf.dpo import DPOConfig, dpo_step, make_optimizer
from minirlhf.logprobs import to_device
from minirlhf.models import check_tokenizer_matches
from minirlhf.pairs import encode_pairs, reference_logps
from minirlhf.preferences import on_policy_pairs
from minirlhf.training import frozen_blocks, fused_gelu, lr_factor, seed_everything


@dataclass
class OnlineDPOConfig(DPOConfig):
    """Hyperparameters of :func:`train_online_dpo`: those of :class:`~minirlhf.dpo.DPOConfig` (with
    other defaults), and the rounds of fresh pairs."""

    learning_rate: float = 2e-3
    """Peak AdamW learning rate: fresh pairs each round keep a high rate safe."""
    rounds: int = 100
    """Rounds of fresh pairs (each: sample, rate, learn)."""
    pairs_per_prompt: int = 16
    """Pairs drawn per prompt in each round (pairs of identical answers are dropped)."""
    temperature: float = 1.3
    """Sampling temperature of the pairs: above 1 keeps rare (bad) answers in the pairs."""
    epochs: int = 1
    """Passes over the pairs of each round."""
    batch_size: int = 512
    """Pairs per step: with the defaults a round's pairs fit one step."""
    adam_beta2: float = 0.99
    """AdamW's second-moment decay: 0.99 follows the changing gradients faster than 0.999."""
    embedding_lr_scale: float = 0.2
    """Token embeddings learn at this fraction of the rate (0 freezes them)."""
    rpo_alpha: float = 0.0
    """No NLL term: fresh pairs show the bad answers the policy drifts to, and DPO pushes them down."""
    eval_every: int = 10
    """Call ``evaluate`` every this many rounds (and before the first and after the last)."""

    def __post_init__(self):
        super().__post_init__()
        check_config(self, positive=("rounds", "pairs_per_prompt", "temperature"))


def round_learning_rate(config: OnlineDPOConfig, step: int, round_: int) -> float:
    """Linear warm-up over the first ``warmup_steps`` steps, then a cosine decay *round by round*:
    a round has as many steps as it has distinct pairs, unknown in advance."""
    warmup = lr_factor(step, 0, config.warmup_steps, decay="constant")
    return config.learning_rate * warmup * lr_factor(round_, config.rounds)


def train_online_dpo(policy, ref_model, tokenizer, prompts: list[str], rater,
                     config: OnlineDPOConfig | None = None, evaluate=None):
    """Train ``policy`` (in place) with online DPO on ``prompts``, against the frozen ``ref_model``.

    ``rater`` labels every fresh pair (e.g. :class:`minirlhf.world.SimulatedRater`, or a person with
    :mod:`minirlhf.widgets`): there is no default, since each label is a cost. ``evaluate(step,
    policy) -> dict``: called at step 0, every ``eval_every`` steps and at the end.

    Returns ``(policy, history)``: dicts with ``step``, ``round``, ``loss``, the metrics of
    :func:`~minirlhf.dpo.dpo_metrics`, ``learning_rate``, ``rater_labels`` (so far), ``time``.
    """
    config = config or OnlineDPOConfig()
    if not prompts:
        raise ValueError("No prompts to train on: pass e.g. minirlhf.world.prompts('train').")
    if rater is None:
        raise ValueError("Online DPO asks a rater to label fresh pairs: pass rater=... (e.g. "
                         "minirlhf.world.SimulatedRater(seed=0)).")
    check_tokenizer_matches(policy, tokenizer)
    check_tokenizer_matches(ref_model, tokenizer)
    prompts = list(dict.fromkeys(prompts))
    device = next(policy.parameters()).device
    ref_model.eval()
    policy.eval()  # no dropout: the log-probs must match the reference's at step 0
    optimizer = make_optimizer(policy, config)
    generator = seed_everything(config.seed)
    history, start, step, labels = [], time.perf_counter(), 0, 0
    if evaluate is not None:
        history.append({"step": 0, "round": 0, "rater_labels": 0, **evaluate(0, policy)})
    with fused_gelu(policy, ref_model), frozen_blocks(policy, config.frozen_blocks):
        for round_ in tqdm(range(config.rounds), desc=f"Online DPO (beta={config.beta})",
                           disable=not config.progress):
            # 1. sample and 2. rate: fresh pairs from the policy as it is now
            data = on_policy_pairs(policy, tokenizer, prompts, config.pairs_per_prompt, rater,
                                   config.seed * 1000 + round_ + 1, config.temperature)
            labels += len(data)
            if len(data) == 0:
                continue  # every pair of answers was identical: nothing to learn from this round
            encoded = to_device(encode_pairs(tokenizer, data), device)
            ref_chosen, ref_rejected = reference_logps(ref_model, encoded)
            # 3. learn: the DPO loss on these pairs
            for _ in range(config.epochs):
                order = torch.randperm(len(data), generator=generator).to(device)
                pending = []
                for idx in order.split(config.batch_size):
                    lr = round_learning_rate(config, step, round_)
                    pending.append(dpo_step(policy, optimizer, encoded, idx, ref_chosen[idx],
                                            ref_rejected[idx], config, lr, step))
                    step += 1
            record = {"step": step, "round": round_ + 1,
                      **{k: sum(p[k] for p in pending) / len(pending) for k in pending[0]},
                      "learning_rate": lr, "rater_labels": labels,
                      "time": time.perf_counter() - start}
            at_eval = (round_ + 1) % config.eval_every == 0 or round_ + 1 == config.rounds
            if evaluate is not None and at_eval:
                record.update(evaluate(step, policy))
            history.append(record)
    return policy, history
