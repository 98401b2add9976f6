"""Supervised fine-tuning (SFT): teach a random tiny GPT to answer like the corpus.

The loss is the usual next-token cross-entropy, but **on response tokens only** (the EOS
included): the prompt is given, not predicted, and padding is not text::

    L_SFT = - (1 / N) * sum_{b, t} m[b, t] * log pi(y[b, t] | x[b], y[b, <t])

where ``m`` is the response mask and ``N = sum m`` the number of response tokens in the batch.
Training is: tokenise the corpus once; then each step draws a random minibatch, computes the
per-token log-probs (:func:`minirlhf.logprobs.token_logprobs`), the loss above and one AdamW step
(warm-up, then cosine decay; gradient norm clipped at 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minirlhf.checks import check_config
from minirlhf.logprobs import encode_prompt_response, to_device, token_logprobs
from minirlhf.training import check_finite_loss, clip_grad_norm, lr_factor, seed_everything


@dataclass
class SFTConfig:
    """Hyperparameters of :func:`train_sft`."""

    steps: int = 1200
    """Optimizer steps (each on one random minibatch)."""
    batch_size: int = 64
    """Examples per minibatch."""
    learning_rate: float = 3e-3
    """Peak learning rate of AdamW (reached after warm-up, then cosine decay to 0)."""
    warmup_steps: int = 30
    """Linear warm-up steps: a tiny model at a high rate needs a gentle start."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 0
    """Seed for minibatch order."""
    log_every: int = 10
    """Record metrics every this many steps."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_config(self, positive=("steps", "batch_size", "learning_rate", "log_every"),
                     non_negative=("warmup_steps", "weight_decay"))


def sft_loss(logprobs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over response tokens.

    ``logprobs``: (B, T) per-token log-probs; ``response_mask``: (B, T), 1 on response tokens.
    Returns a scalar: ``-sum(logprobs * mask) / sum(mask)``.
    """
    n_tokens = response_mask.sum()
    if n_tokens == 0:
        raise ValueError("The batch has no response tokens: every response is empty.")
    return -(logprobs * response_mask).sum() / n_tokens


def train_sft(model, tokenizer, dataset, config: SFTConfig | None = None) -> list[dict]:
    """Fine-tune ``model`` on ``dataset`` (columns ``prompt`` and ``response``) in place.

    The whole corpus is tokenised once; each step draws a random minibatch. Returns the metrics
    history: a list of ``{"step", "loss", "learning_rate", "time"}`` dicts.
    """
    config = config or SFTConfig()
    for column in ("prompt", "response"):
        if column not in dataset.column_names:
            raise ValueError(f"The SFT dataset needs a {column!r} column; it has {dataset.column_names}.")
    generator = seed_everything(config.seed)
    device = next(model.parameters()).device
    corpus = to_device(encode_prompt_response(tokenizer, dataset["prompt"], dataset["response"]), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.steps, config.warmup_steps))
    model.train()
    history, start = [], time.perf_counter()
    for step in tqdm(range(config.steps), desc="SFT", disable=not config.progress):
        rows = torch.randint(len(dataset), (config.batch_size,), generator=generator).to(device)
        batch = {k: v[rows] for k, v in corpus.items()}
        logp = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
        loss = sft_loss(logp, batch["response_mask"])
        check_finite_loss(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(optimizer, 1.0)
        optimizer.step()
        scheduler.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            history.append({"step": step, "loss": loss.item(),
                            "learning_rate": scheduler.get_last_lr()[0],
                            "time": time.perf_counter() - start})
    model.eval()
    return history
