"""Kahneman-Tversky Optimization (KTO, Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect
Theoretic Optimization"): learn from *unpaired* feedback, one thumbs-up or thumbs-down per answer.

DPO needs two answers to the same prompt and a judgement of which is better. KTO needs one answer
and a label, "desirable" or "undesirable": cheaper to collect (a thumbs button under each answer).
It keeps DPO's implicit reward ``r_theta(x, y) = log pi(y|x) - log pi_ref(y|x)`` and compares it with
a *reference point* z0 instead of with a second answer::

    z0     = max(0, KL-estimate)   mean of log pi(y'|x) - log pi_ref(y'|x) over mismatched pairs (x, y'),
                                   each prompt with another example's answer; no gradient (eq. 9)
    v(x,y) = sigmoid(beta * (r_theta - z0))     desirable y
           = sigmoid(beta * (z0 - r_theta))     undesirable y
    L      = mean over the batch of  lambda_y * (1 - v(x, y))                  (eq. 8)

Raising a desirable answer's log-ratio above z0 and pushing an undesirable one's below it is all the
loss asks; since z0 is the policy's drift on *other* answers, it cannot win by raising everything.
TRL 1.16's ``KTOTrainer(loss_type="kto")`` computes the same loss (tested).

Training here is offline, like :mod:`minirlhf.dpo`::

    1. data     answers sampled once from pi_ref, each labelled once by the rater (:func:`unpaired_feedback`)
    2. once     log pi_ref of every (x, y)
    3. epochs   shuffled minibatches: log pi of each (x, y), z0 from the batch's mismatched pairs, the loss
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from minirlhf import world
from minirlhf.checks import check_config
from minirlhf.dpo import make_optimizer
from minirlhf.logprobs import encode_prompt_response, sequence_logprobs, to_device
from minirlhf.models import check_tokenizer_matches
from minirlhf.sampling import generate
from minirlhf.training import (
    check_finite_loss,
    clip_grad_norm,
    frozen_blocks,
    fused_gelu,
    lr_factor,
    seed_everything,
)

# ----------------------------------------------------------------------------------------------
# The loss: a pure function of summed log-probs, shape (B,)
# ----------------------------------------------------------------------------------------------


def kto_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, desirable: torch.Tensor,
             kl: torch.Tensor, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO's loss of each answer (Ethayarajh et al. 2024, eq. 8), shapes (B,), ``desirable`` bool (B,)::

        r = log pi(y|x) - log pi_ref(y|x)
        L = lambda_D (1 - sigmoid(beta (r - z0)))   desirable        z0 = ``kl`` (detached, >= 0)
          = lambda_U (1 - sigmoid(beta (z0 - r)))   undesirable

    Returns ``(losses, rewards)``: the loss of each answer (the trainer averages) and the implicit
    rewards ``beta * r``, detached."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}.")
    if desirable.dtype != torch.bool or desirable.shape != policy_logps.shape:
        raise ValueError("desirable must be a bool tensor with one label per answer.")
    z0 = kl.detach().clamp(min=0)
    log_ratios = policy_logps - reference_logps
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (log_ratios - z0))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratios))))
    return losses, beta * log_ratios.detach()


def kl_reference_point(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z0 (eq. 9): ``max(0, mean(log pi(y'|x) - log pi_ref(y'|x)))`` over mismatched pairs, a
    biased but cheap estimate of KL(pi || pi_ref), without gradient. Shape ()."""
    return (policy_logps - reference_logps).detach().mean().clamp(min=0)


def mismatched(answers: list[str]) -> list[str]:
    """Each answer moved to the next example of the batch (the last to the first): the mismatched
    pairs (x_i, y_{i-1}) whose log-ratios estimate the reference point, as TRL pairs them."""
    return answers[-1:] + answers[:-1]


# ----------------------------------------------------------------------------------------------
# Data: one label per answer
# ----------------------------------------------------------------------------------------------


def thumbs_up(rater: world.SimulatedRater, prompt: str, answer: str) -> bool:
    """The simulated rater's one label for one answer: does it prefer ``answer`` to the hedged correct
    answer (true reward 0, the neutral point of the world's scale)? A Bradley-Terry draw, so
    ``P(up) = sigmoid(r(x, y) / tau)``: a correct concise answer gets a thumbs up with probability
    0.73 at tau 1, a wrong one 0.27."""
    neutral = world.make_response(world.country_of_prompt(prompt), "hedge")
    return rater.prefers_first(prompt, answer, neutral)


def unpaired_feedback(model, tokenizer, prompts: list[str], answers_per_prompt: int,
                      rater: world.SimulatedRater, seed: int = 0, temperature: float = 1.0,
                      max_new_tokens: int = 16) -> Dataset:
    """Sample ``answers_per_prompt`` answers to each prompt from ``model`` and let ``rater`` label
    each once (:func:`thumbs_up`). Returns TRL's unpaired format: ``prompt``, ``completion``,
    ``label`` (bool); ``len`` of it is the number of labels paid."""
    if answers_per_prompt < 1 or not prompts:
        raise ValueError("Need at least one prompt and answers_per_prompt >= 1.")
    generator = seed_everything(seed)
    batch = [p for p in prompts for _ in range(answers_per_prompt)]
    answers = generate(model, tokenizer, batch, max_new_tokens, temperature, generator)["responses"]
    labels = [thumbs_up(rater, p, y) for p, y in zip(batch, answers)]
    return Dataset.from_dict({"prompt": batch, "completion": answers, "label": labels})


# ----------------------------------------------------------------------------------------------
# Configuration and loop
# ----------------------------------------------------------------------------------------------


@dataclass
class KTOConfig:
    """Hyperparameters of :func:`train_kto`, named as in TRL's ``KTOConfig``; the optimiser's are
    :class:`~minirlhf.dpo.DPOConfig`'s (the same :func:`~minirlhf.dpo.make_optimizer`)."""

    beta: float = 0.1
    """KL strength, as DPO's."""
    desirable_weight: float = 1.0
    """lambda_D, the weight of desirable answers' losses."""
    undesirable_weight: float = 1.0
    """lambda_U, the weight of undesirable answers' losses."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate (warm-up, then cosine decay to 0). A third of DPO's: without DPO's NLL
    term (RPO), a higher rate sends the mass off the candidate answers (docs/defaults.md#kto)."""
    epochs: int = 4
    """Passes over the answers."""
    batch_size: int = 64
    """Answers per step; the reference point is estimated on the same batch."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta2: float = 0.999
    """AdamW's second-moment decay."""
    adam_epsilon: float = 1e-8
    """AdamW's epsilon."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this value."""
    embedding_lr_scale: float = 0.0
    """Token embeddings learn at this fraction of the rate (0 freezes them), as in DPO."""
    frozen_blocks: int = 1
    """Keep the policy's first transformer blocks as SFT left them."""
    seed: int = 0
    """Seed of the order of the answers."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_config(self, positive=("beta", "learning_rate", "epochs", "batch_size", "max_grad_norm",
                                     "adam_epsilon"),
                     non_negative=("desirable_weight", "undesirable_weight", "warmup_steps", "weight_decay",
                                   "embedding_lr_scale", "frozen_blocks"),
                     unit_interval=("adam_beta2",))
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: the reference point needs mismatched pairs.")


def check_unpaired_data(data) -> None:
    """Refuse data that is not TRL's unpaired format: ``prompt``, ``completion`` strings, ``label`` bool."""
    missing = {"prompt", "completion", "label"} - set(getattr(data, "column_names", []))
    if missing:
        raise ValueError(f"KTO needs a Dataset with columns prompt, completion, label; "
                         f"missing {sorted(missing)}."
                         " Make one with minirlhf.kto.unpaired_feedback.")
    if len(data) < 2:
        raise ValueError("KTO needs at least two answers.")
    if not all(isinstance(label, bool) for label in data["label"]):
        raise ValueError("Every label must be a bool (True: desirable).")


def answer_logps(model, tokenizer, prompts: list[str], answers: list[str], device) -> torch.Tensor:
    """log pi(y|x) of each pair, summed over the answer's tokens and EOS (B,), with gradients."""
    return sequence_logprobs(model, to_device(encode_prompt_response(tokenizer, prompts, answers), device))


def train_kto(policy, ref_model, tokenizer, data, config: KTOConfig | None = None, evaluate=None):
    """Train ``policy`` (in place) with KTO against the frozen ``ref_model`` on ``data`` (TRL's
    unpaired format, e.g. :func:`unpaired_feedback`). ``evaluate(step, policy) -> dict``: called at step
    0 and at the end. Returns ``(policy, history)``: one dict per step with ``loss``, ``kl`` (z0),
    ``rewards/chosen`` and ``rewards/rejected`` (TRL's names), ``learning_rate``, ``time``."""
    config = config or KTOConfig()
    check_tokenizer_matches(policy, tokenizer)
    check_tokenizer_matches(ref_model, tokenizer)
    check_unpaired_data(data)
    device = next(policy.parameters()).device
    ref_model.eval()
    policy.eval()
    prompts, answers = list(data["prompt"]), list(data["completion"])
    labels = torch.tensor(data["label"], dtype=torch.bool, device=device)
    with torch.no_grad():  # 2. log pi_ref once
        ref_logps = torch.cat([answer_logps(ref_model, tokenizer, prompts[i:i + 256], answers[i:i + 256],
                                            device) for i in range(0, len(prompts), 256)])
    optimizer = make_optimizer(policy, config)
    generator = seed_everything(config.seed)
    n_batches = -(-len(prompts) // config.batch_size)
    total, step, start = config.epochs * n_batches, 0, time.perf_counter()
    history = [{"step": 0, **evaluate(0, policy)}] if evaluate is not None else []
    with fused_gelu(policy, ref_model), frozen_blocks(policy, config.frozen_blocks):
        for _ in tqdm(range(config.epochs), desc=f"KTO (beta={config.beta})", disable=not config.progress):
            for idx in torch.randperm(len(prompts), generator=generator).split(config.batch_size):
                if len(idx) < 2:
                    continue  # a lone answer has no mismatched pair for z0
                rows = idx.tolist()
                x, y = [prompts[i] for i in rows], [answers[i] for i in rows]
                with torch.no_grad():  # the reference point z0, from the batch's mismatched pairs
                    y_other = mismatched(y)
                    z0 = kl_reference_point(answer_logps(policy, tokenizer, x, y_other, device),
                                            answer_logps(ref_model, tokenizer, x, y_other, device))
                logps = answer_logps(policy, tokenizer, x, y, device)
                losses, rewards = kto_loss(logps, ref_logps[idx.to(device)], labels[idx.to(device)], z0,
                                           config.beta, config.desirable_weight, config.undesirable_weight)
                loss = losses.mean()
                check_finite_loss(loss, step)
                lr = config.learning_rate * lr_factor(step, total, config.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad_norm(optimizer, config.max_grad_norm)
                optimizer.step()
                step += 1
                chosen = labels[idx.to(device)]
                history.append({"step": step, "loss": loss.item(), "kl": z0.item(),
                                "rewards/chosen": (rewards[chosen].mean().item() if chosen.any()
                                                   else float("nan")),
                                "rewards/rejected": (rewards[~chosen].mean().item() if (~chosen).any()
                                                     else float("nan")),
                                "learning_rate": lr, "time": time.perf_counter() - start})
    if evaluate is not None:
        history[-1].update(evaluate(step, policy))
    return policy, history
