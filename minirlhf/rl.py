"""What PPO (:mod:`minirlhf.ppo`) and GRPO (:mod:`minirlhf.grpo`) share, so that each of those files
holds only its own algorithm:

* :class:`RLConfig`, the settings both have: sampling, the KL coefficient, the optimiser, the length
  of the run, and the reward-model refreshes;
* :func:`rollout`, step 1 of both: sample answers and record their log-probs under pi and pi_ref
  (and a critic's values, for PPO), all on one (B, T) grid;
* :func:`score_rollouts`, the score of each sampled answer: the true reward, or a learned reward
  model's (an answer cut at the length limit is scored closed with EOS, as the rater sees it);
* :func:`weighted_mean`, the mean over the answers' tokens that both losses take;
* :func:`kl_estimators`, k1, k2 and k3 of the KL to pi_ref whose weight is ``beta``: PPO's reward
  penalty is k1 (written out in :func:`~minirlhf.ppo.per_token_rewards`), GRPO's loss term is k3, in
  :func:`~minirlhf.grpo.grpo_loss` and :func:`~minirlhf.grpo_variants.variant_loss`;
* :class:`RaterRefreshes`, iterated RLHF: with a learned reward model and a rater, every few steps the
  rater compares the policy's answers with pi_ref's and a copy of the reward model learns from them.
  A reward model trained once is right only near the answers its pairs showed; this keeps it right
  where the policy goes. The labels are counted: they are what a real project pays for.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from datasets import concatenate_datasets

from minirlhf import world
from minirlhf.checks import check_config, shorten
from minirlhf.logprobs import token_logprobs
from minirlhf.models import check_reward_model
from minirlhf.preferences import on_policy_pairs
from minirlhf.reward import RewardConfig, evaluate_reward_model, train_reward_model
from minirlhf.sampling import close_cut_answers, generate


@dataclass
class RLConfig:
    """The settings PPO's and GRPO's configs share (why each default: docs/defaults.md)."""

    beta: float = 0.1
    """KL coefficient: the weight of the KL to pi_ref in the objective (0 = no penalty)."""
    epochs: int = 4
    """Passes over each batch of answers."""
    minibatches: int = 2
    """Minibatches per pass."""
    clip_range: float = 0.2
    """PPO's epsilon: how far the ratio pi/pi_old may move before the gain is cut."""
    temperature: float = 1.0
    """Sampling temperature; the log-probs of policy and reference use the same one."""
    max_new_tokens: int = 16
    """Length cap of an answer (the longest valid answer is 13 tokens with its EOS)."""
    missing_eos_penalty: float | None = None
    """If set, subtract this from the score of an answer cut at ``max_new_tokens`` without EOS."""
    reward_refresh_every: int = 25
    """With a learned reward model *and* a ``rater``: every this many steps the rater compares the
    policy's answers with pi_ref's and the reward model learns from them (0 = never)."""
    refresh_pairs_per_prompt: int = 8
    """Pairs sampled per training prompt at each refresh."""
    learning_rate: float | None = None
    """Peak Adam learning rate of the policy (warm-up, then linear decay to 0). None picks
    ``min(3e-4, 1e-4 / beta)``: at large beta pi* keeps rare answers that big steps would wipe out."""
    embedding_lr_scale: float = 0.1
    """Token embeddings (tied to GPT-2's output layer) learn at this fraction of the rate (0 freezes
    them): a fast output layer lowers names no prompt samples, held-out countries' included."""
    adam_eps: float = 1e-8
    """Adam's epsilon."""
    frozen_blocks: int = 1
    """Keep the policy's first transformer blocks as SFT left them (0 trains every block): RL should
    change *how* the policy answers, not what it knows about each country."""
    warmup_steps: int = 5
    """Linear warm-up steps of the learning rate."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm (of the policy, and of PPO's critic with it, as TRL does)."""
    steps: int = 1000
    """Steps (each: one batch of answers, then ``epochs x minibatches`` optimiser steps)."""
    seed: int = 0
    """Seed of sampling and shuffling."""
    eval_every: int = 100
    """Call ``evaluate`` every this many steps (and at the first and last); 0 never calls it."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_config(self, positive=("epochs", "minibatches", "clip_range", "temperature", "max_new_tokens",
                                     "refresh_pairs_per_prompt", "learning_rate", "adam_eps",
                                     "max_grad_norm", "steps"),
                     non_negative=("beta", "embedding_lr_scale", "frozen_blocks", "reward_refresh_every",
                                   "warmup_steps", "eval_every"))

    def policy_learning_rate(self) -> float:
        """``learning_rate``, or when it is None the default for this beta: min(3e-4, 1e-4 / beta)
        (3e-4 at beta 0; with PPO's adaptive controller, for the starting beta)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 3e-4 if self.beta == 0 else min(3e-4, 1e-4 / self.beta)


def check_world_prompts(prompts: list[str]) -> None:
    """Refuse, before the first step, training prompts outside the toy world: every step logs the true
    reward of its answers (``objective/true_reward``), and the simulated rater judges by it, and the
    world defines it on its own prompts only (:func:`minirlhf.world.make_prompt`)."""
    if not prompts:
        raise ValueError("No prompts to train on: pass e.g. minirlhf.world.prompts('train').")
    for i, prompt in enumerate(prompts):
        try:
            world.country_of_prompt(prompt)
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(
                f"Prompt {i} ({shorten(prompt)}) is not one of the toy world's: every step logs the true "
                f"reward of its answers, defined only on prompts like {world.make_prompt('France')!r} "
                "for the world's countries, also with your own reward model. Build prompts with "
                "minirlhf.world.make_prompt(country), or use minirlhf.world.prompts('train').") from error


# ----------------------------------------------------------------------------------------------
# Steps 1 and 2 of both: sample answers (log-probs on one (B, T) grid), and score them
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def rollout(policy, ref_model, critic, tokenizer, prompts: list[str], config: RLConfig,
            generator: torch.Generator | None = None) -> dict:
    """Step 1 of PPO and GRPO: sample one response per prompt and record what the update needs, on
    one (B, T) grid.

    Returns the batch layout of :func:`minirlhf.sampling.generate` (``input_ids``,
    ``attention_mask``, ``response_mask``, ``responses``, ``finished``) plus ``prompts`` and
    ``logprobs``, ``ref_logprobs``, ``entropy`` and ``values``, each (B, T), computed by
    teacher forcing with the shared helper at the sampling temperature (``values`` None without a
    ``critic``, as in GRPO).
    """
    batch = generate(policy, tokenizer, prompts, config.max_new_tokens, config.temperature, generator)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    batch["response_mask"] = batch["response_mask"].float()
    batch["logprobs"], batch["entropy"] = token_logprobs(policy, ids, attention, config.temperature,
                                                         return_entropy=True)
    batch["ref_logprobs"] = token_logprobs(ref_model, ids, attention, config.temperature)
    batch["values"] = critic(ids, attention) if critic is not None else None
    batch["prompts"] = list(prompts)
    return batch


@torch.no_grad()
def score_rollouts(batch: dict, reward_model=None, missing_eos_penalty: float | None = None
                   ) -> torch.Tensor:
    """The score r(x, y) of each response, shape (B,): the learned ``reward_model``'s, or when it is
    None the true reward of the decoded text. Without EOS, minus ``missing_eos_penalty`` if set.
    An answer cut at the length limit is scored closed with EOS, as the rater and the reward model see
    every answer: at a token where no rated answer ended, the reward model's score is arbitrary, and
    a policy learns to stop there (the classic "never say EOS" exploit)."""
    device = batch["input_ids"].device
    if reward_model is None:
        scores = torch.tensor([world.true_reward(p, y) for p, y in zip(batch["prompts"],
                                                                       batch["responses"])])
    else:  # it learned from complete answers (text + EOS): score a cut one as the rater sees it
        ids, mask = close_cut_answers(batch["input_ids"], batch["attention_mask"], batch["finished"],
                                      reward_model.backbone.config.eos_token_id)
        scores = reward_model(ids, mask).float()
    scores = scores.to(device)
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * (~batch["finished"]).to(device).float()
    return scores


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(values * weights) / sum(weights)``, a scalar; shapes (B, T). With a 0/1 mask as
    ``weights``, the mean over the real tokens (an all-zero mask gives 0: the sum counts as 1)."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)


def kl_estimators(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-sample estimates k1, k2, k3 of KL(pi || pi_ref) from ``log pi`` and ``log pi_ref`` of
    samples drawn from pi (any shape, kept)::

        d  = log pi_ref - log pi
        k1 = -d,    k2 = d^2 / 2,    k3 = exp(d) - 1 - d   (computed as expm1(d) - d: exact near 0)
    """
    d = ref_logprobs - logprobs
    return {"k1": -d, "k2": 0.5 * d ** 2, "k3": torch.expm1(d) - d}


# ----------------------------------------------------------------------------------------------
# Step 6 of both (optional): the rater refreshes the reward model
# ----------------------------------------------------------------------------------------------

# A refresh trains briefly and gently, so that the scores (and the critic's targets) move a little at a
# time; on pairs sampled at a temperature above 1, so that rare answers are judged too.
REFRESH_REWARD_CONFIG = {"steps": 30, "learning_rate": 1e-3, "head_learning_rate": 3e-3, "warmup_steps": 5}
REFRESH_TEMPERATURE = 1.3


def refresh_reward_model(reward_model, policy, tokenizer, prompts: list[str], rater, seen,
                         pairs_per_prompt: int = 8, seed: int = 0, against=None):
    """One refresh: ``rater`` judges ``pairs_per_prompt`` pairs of the policy's current answers to each
    prompt (each against an answer of ``against``, e.g. pi_ref, when given: a policy that always says
    the same thing is still compared with something), and ``reward_model`` trains further, in place,
    on every pair so far (``seen``, a Dataset or None, plus the fresh ones).

    Returns ``(seen, metrics)``: the grown data, ``reward_model/refresh_pairs`` (the rater's new
    labels) and ``reward_model/refresh_accuracy``: how often the reward model agreed with the rater
    on the fresh pairs *before* learning from them (low: the policy found answers it scores wrongly).
    """
    fresh = on_policy_pairs(policy, tokenizer, prompts, pairs_per_prompt, rater, seed=seed,
                            temperature=REFRESH_TEMPERATURE, against=against)
    if len(fresh) == 0:  # the policy gives one answer per prompt: nothing to compare
        return seen, {"reward_model/refresh_pairs": 0}
    agreement = evaluate_reward_model(reward_model, tokenizer, fresh)["accuracy"]
    seen = fresh if seen is None else concatenate_datasets([seen, fresh])
    config = RewardConfig(seed=seed, progress=False, **REFRESH_REWARD_CONFIG)
    train_reward_model(reward_model, tokenizer, seen, config)
    return seen, {"reward_model/refresh_pairs": len(fresh), "reward_model/refresh_accuracy": agreement}


class RaterRefreshes:
    """The reward model an RL run scores with, and its refreshes by the ``rater`` (none without one).

    ``reward_model`` None means the true reward. With a ``rater``, a *copy* of the reward model is
    refreshed (the caller's stays as it was) on the rater's new labels and on ``reward_data``, the
    pairs it learned from; :attr:`labels` counts the new labels.
    """

    def __init__(self, reward_model, rater, reward_data, ref_model, tokenizer, prompts: list[str],
                 config: RLConfig):
        if rater is not None and reward_model is None:
            raise ValueError("A rater refreshes a learned reward model, and reward_model=None means the "
                             "true reward (PPO-GT), which has none: pass a reward model, or no rater.")
        if reward_model is not None:
            check_reward_model(reward_model, tokenizer)
            reward_model.eval()
        self.active = rater is not None and config.reward_refresh_every > 0
        self.reward_model = copy.deepcopy(reward_model) if self.active else reward_model
        self.seen = (reward_data.select_columns(["prompt", "chosen", "rejected"])
                     if self.active and reward_data is not None else None)
        self.rater, self.ref_model, self.tokenizer, self.config = rater, ref_model, tokenizer, config
        self.prompts = list(dict.fromkeys(prompts))
        self.labels = 0  #: the rater's new labels so far (each refresh adds its pairs)

    def after_step(self, step: int, policy) -> dict:
        """Refresh every ``reward_refresh_every`` steps (not after the last); returns its metrics."""
        config = self.config
        if not (self.active and step % config.reward_refresh_every == 0 and step < config.steps):
            return {}
        self.seen, metrics = refresh_reward_model(self.reward_model, policy, self.tokenizer, self.prompts,
                                                  self.rater, self.seen, config.refresh_pairs_per_prompt,
                                                  config.seed + step, against=self.ref_model)
        self.labels += metrics["reward_model/refresh_pairs"]
        return metrics
