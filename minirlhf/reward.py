"""The Bradley-Terry reward model: a transformer backbone plus a linear head.

The reward model reads a prompt and a response and returns one number, ``r_phi(x, y)``. It is
the SFT model's transformer (so it starts out knowing the language of the world; from random
weights it learned almost nothing) with its language-model head replaced by a linear layer that
maps the hidden state of the **last non-pad token** (the EOS that ends the response) to a scalar.

It is trained on preference triplets ``(x, y_w, y_l)`` to make the Bradley-Terry probability of
the observed choice large::

    P(y_w > y_l | x) = sigmoid(r_phi(x, y_w) - r_phi(x, y_l))
    L(phi)           = - E_{(x, y_w, y_l)} [ log sigmoid(r_phi(x, y_w) - r_phi(x, y_l)) ]

Only *differences* of rewards for the same prompt enter the loss, so the reward is learned up to
a constant per prompt. With the toy world's rater (tau = 1) the fitted reward estimates the true
reward itself (up to that constant), which the notebook checks with a scatter plot.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from tqdm.auto import tqdm

from minirlhf.checks import check_config
from minirlhf.logprobs import encode_prompt_response, last_token_index, position_ids_from_mask, to_device
from minirlhf.models import check_tokenizer_matches
from minirlhf.preferences import check_preference_data, distinct_answers
from minirlhf.saved_models import read_reward_model, save_reward_model, write_reward_model_files
from minirlhf.training import check_finite_loss, clip_grad_norm, lr_factor, seed_everything

# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------

def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """The Bradley-Terry (pairwise logistic) loss, a scalar.

    ``L = mean_b [ -log sigmoid(r_w[b] - r_l[b]) ]`` with ``r_w = chosen_scores`` and
    ``r_l = rejected_scores``, both of shape (B,). ``F.logsigmoid`` keeps it finite for large
    margins (``log(sigmoid(-100))`` would underflow to ``log 0``). Equal scores give ``log 2``.
    """
    if chosen_scores.shape != rejected_scores.shape:
        raise ValueError(f"chosen_scores {tuple(chosen_scores.shape)} and rejected_scores "
                         f"{tuple(rejected_scores.shape)} must have the same shape.")
    if chosen_scores.numel() == 0:
        raise ValueError("The batch is empty: give at least one pair of scores.")
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()


def pair_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Fraction of pairs where the model agrees with the label: ``r_w > r_l`` (a tie counts 1/2)."""
    wins = (chosen_scores > rejected_scores).float() + 0.5 * (chosen_scores == rejected_scores).float()
    return wins.mean().item()


def reward_metrics(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> dict[str, float]:
    """The logged metrics of a batch of pairs: ``loss``, ``accuracy``, ``margin`` (mean
    ``r_w - r_l``), and ``reward/mean``, ``reward/min``, ``reward/max`` over all its scores."""
    chosen_scores, rejected_scores = chosen_scores.detach().float(), rejected_scores.detach().float()
    scores = torch.cat([chosen_scores, rejected_scores])
    return {
        "loss": bradley_terry_loss(chosen_scores, rejected_scores).item(),
        "accuracy": pair_accuracy(chosen_scores, rejected_scores),
        "margin": (chosen_scores - rejected_scores).mean().item(),
        "reward/mean": scores.mean().item(),
        "reward/min": scores.min().item(),
        "reward/max": scores.max().item(),
    }


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

class RewardModel(torch.nn.Module):
    """``r_phi(x, y)``: a transformer ``backbone`` and a linear ``head`` on its last hidden state.

    Build it from a causal LM with :meth:`from_base`. ``forward`` returns one score per row.
    Scores are reported as ``(raw - score_mean) / score_std``; the two buffers are 0 and 1 (no
    rescaling) until :meth:`normalize` sets them from reference samples.
    """

    def __init__(self, backbone, freeze_backbone: bool = False, attention_only: bool = False):
        super().__init__()
        if freeze_backbone and attention_only:
            raise ValueError("Choose one: freeze_backbone (train the head only) or attention_only.")
        self.backbone = backbone
        # Zero init: every answer starts with reward 0, so the first loss is exactly log 2.
        self.head = torch.nn.Linear(backbone.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.register_buffer("score_mean", torch.zeros(()))
        self.register_buffer("score_std", torch.ones(()))
        self.freeze_backbone = freeze_backbone
        self.attention_only = attention_only
        for name, parameter in self.backbone.named_parameters():
            is_attention = "attn" in name or "attention" in name  # GPT-2: h.0.attn.c_attn.weight
            parameter.requires_grad_(not freeze_backbone and (is_attention or not attention_only))
        self.tokenizer = None  # set by load() when a tokenizer was saved with the model
        self.to(next(backbone.parameters()).device)

    @classmethod
    def from_base(cls, model, freeze_backbone: bool = False, attention_only: bool = False) -> RewardModel:
        """A reward model whose backbone is a *copy* of ``model``'s transformer (the SFT model).

        ``model`` is a Hugging Face causal LM (its language-model head is dropped) or a bare
        transformer. ``freeze_backbone=True`` trains only the linear head; ``attention_only=True``
        trains the head and the backbone's attention layers (the weights LoRA adapts by default),
        while embeddings, MLPs and layer norms keep the SFT weights.
        """
        backbone = copy.deepcopy(getattr(model, "base_model", model))
        return cls(backbone, freeze_backbone=freeze_backbone, attention_only=attention_only)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def train(self, mode: bool = True) -> RewardModel:
        """Like ``nn.Module.train``, but a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores of the rows of a batch: ``input_ids``, ``attention_mask`` (B, T) -> (B,).

        Positions come from the mask, so left padding does not shift them; the score is read at
        the last non-pad token of each row (left or right padding alike).
        """
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids_from_mask(attention_mask),
                               use_cache=False).last_hidden_state  # one pass, no KV cache needed
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, last_token_index(attention_mask)]  # (B, H)
        raw = self.head(last.float()).squeeze(-1)  # (B,)
        return (raw - self.score_mean) / self.score_std

    @torch.no_grad()
    def score_texts(self, tokenizer, prompts: list[str], responses: list[str],
                    batch_size: int = 256) -> torch.Tensor:
        """``r_phi(prompt, response)`` for each pair, without gradients; a CPU tensor (B,)."""
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(prompts), batch_size):
            batch = encode_prompt_response(tokenizer, prompts[i:i + batch_size],
                                           responses[i:i + batch_size], model=self.backbone)
            batch = to_device(batch, self.device)
            out.append(self(batch["input_ids"], batch["attention_mask"]).float().cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    @torch.no_grad()
    def normalize(self, reference_scores: torch.Tensor) -> RewardModel:
        """Rescale future scores so that ``reference_scores`` (scores this model gives now, e.g.
        to SFT samples) would have mean 0 and std 1. Calling it again composes correctly."""
        reference_scores = torch.as_tensor(reference_scores, dtype=torch.float32).to(self.device)
        if reference_scores.numel() < 2:
            raise ValueError("normalize needs at least 2 reference scores to estimate a std.")
        std = reference_scores.std()
        if not std > 0:
            raise ValueError("The reference scores are all equal: their std is 0, nothing to divide by.")
        # current = (raw - m) / s; we want (current - mean) / std = (raw - m') / s'
        self.score_mean += self.score_std * reference_scores.mean()
        self.score_std *= std
        return self

    @torch.no_grad()
    def reset_normalization(self) -> RewardModel:
        """Go back to raw scores (mean 0, std 1 buffers)."""
        self.score_mean.zero_()
        self.score_std.fill_(1.0)
        return self

    # --- saving and loading (safetensors + JSON, no pickle): minirlhf.saved_models -------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write the checkpoint files into the folder ``path`` (called by :meth:`save`)."""
        write_reward_model_files(self, path)

    def save(self, path: str | Path, tokenizer=None) -> Path:
        """Save as the checkpoint folder ``path``, with ``tokenizer`` (or the one it was loaded with)."""
        return save_reward_model(self, path, tokenizer or self.tokenizer)

    @classmethod
    def load(cls, path: str | Path, device=None) -> RewardModel:
        """Load a reward model saved by :meth:`save`, in eval mode; ``.tokenizer`` is the saved
        tokenizer (or None)."""
        return read_reward_model(cls, path, device)


def load_reward_model(path: str | Path, device=None):
    """``(reward_model, tokenizer)`` saved by :meth:`RewardModel.save` with a tokenizer."""
    model = RewardModel.load(path, device=device)
    if model.tokenizer is None:
        raise ValueError(f"{str(path)!r} has no tokenizer: save with model.save(path, tokenizer).")
    return model, model.tokenizer


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass
class RewardConfig:
    """Hyperparameters of :func:`train_reward_model`."""

    steps: int = 300
    """Optimizer steps (each on one random minibatch of pairs)."""
    batch_size: int = 256
    """Preference pairs per minibatch (each distinct answer in it is scored once)."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate of the backbone (after warm-up, then cosine decay to 0)."""
    head_learning_rate: float = 1e-2
    """Peak learning rate of the linear head: it starts at zero and has the most to learn."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay (of backbone and head): keeps the scores from growing without need."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this value."""
    seed: int = 0
    """Seed of the minibatch order."""
    log_every: int = 10
    """Record training metrics (of the current minibatch) every this many steps."""
    eval_every: int = 50
    """Evaluate on all of ``eval_data`` every this many steps (and at the first and last step)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self):
        check_config(self, positive=("steps", "batch_size", "learning_rate", "head_learning_rate",
                                     "log_every", "eval_every", "max_grad_norm"),
                     non_negative=("warmup_steps", "weight_decay"))


def encode_distinct_answers(tokenizer, data: Dataset, device=None, model=None) -> dict[str, torch.Tensor]:
    """Tokenise each *distinct* (prompt, response) of ``data`` once, and index the pairs into them.

    Preference data repeat themselves (the SFT model gives the same few answers again and again),
    so scoring every distinct answer once per step is several times cheaper than scoring both
    sides of every pair, and gives exactly the same loss and gradient. Returns ``input_ids`` and
    ``attention_mask`` (U, T) of the U distinct sequences, and ``chosen`` / ``rejected`` (N,): the
    row of each pair's chosen / rejected answer. With a ``model``, a text too long for it is refused.
    """
    distinct, chosen, rejected = distinct_answers(data)
    batch = encode_prompt_response(tokenizer, [p for p, _ in distinct], [r for _, r in distinct], model=model)
    encoded = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
               "chosen": torch.tensor(chosen), "rejected": torch.tensor(rejected)}
    return to_device(encoded, device) if device is not None else encoded


def score_pairs(reward_model: RewardModel, encoded: dict[str, torch.Tensor], rows: torch.Tensor):
    """Scores ``(r_w, r_l)``, each (B,), of the pairs ``rows`` of :func:`encode_distinct_answers`' data.

    One forward pass over the distinct sequences these pairs need; each pair reads its two scores.
    """
    chosen, rejected = encoded["chosen"][rows], encoded["rejected"][rows]
    needed, position = torch.unique(torch.cat([chosen, rejected]), return_inverse=True)
    scores = reward_model(encoded["input_ids"][needed], encoded["attention_mask"][needed])
    return scores[position[:len(rows)]], scores[position[len(rows):]]


@torch.no_grad()
def score_preference_pairs(reward_model: RewardModel, tokenizer, data: Dataset):
    """Scores ``(r_w, r_l)``, each (N,) on the CPU, of every pair of ``data`` (no gradients;
    each distinct answer is scored once)."""
    distinct, chosen, rejected = distinct_answers(data)
    scores = reward_model.score_texts(tokenizer, [p for p, _ in distinct], [r for _, r in distinct])
    return scores[chosen], scores[rejected]


def evaluate_reward_model(reward_model: RewardModel, tokenizer, data: Dataset) -> dict[str, float]:
    """:func:`reward_metrics` over all pairs of ``data`` (no gradients)."""
    check_preference_data(data, "evaluation data", allow_empty_answers=True)
    return reward_metrics(*score_preference_pairs(reward_model, tokenizer, data))


def _optimizer_and_schedule(reward_model: RewardModel, config: RewardConfig):
    """AdamW with two parameter groups (backbone, head; in the model's order, so that clipping sums
    the gradient norm as over ``reward_model.parameters()``) and one warm-up + cosine schedule."""
    groups = [{"params": list(reward_model.head.parameters()), "lr": config.head_learning_rate}]
    if not reward_model.freeze_backbone:
        groups.insert(0, {"params": list(reward_model.backbone.parameters()), "lr": config.learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    schedule = functools.partial(lr_factor, total=config.steps, warmup=config.warmup_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def train_reward_model(reward_model: RewardModel, tokenizer, train_data: Dataset,
                       config: RewardConfig | None = None, eval_data: Dataset | None = None) -> list[dict]:
    """Fit ``reward_model`` to preference pairs with the Bradley-Terry loss, in place.

    Each step draws a random minibatch of pairs, scores the distinct answers it holds in one
    forward pass, and takes an AdamW step on ``-log sigmoid(r_w - r_l)``. Returns the history:
    a list of dicts with ``step``, ``loss``, ``accuracy``, ``margin``, ``reward/mean``,
    ``reward/min``, ``reward/max``, ``learning_rate``, ``time``, and with ``eval_data`` the
    same metrics over all of it as ``eval/...``.
    """
    config = config or RewardConfig()
    check_tokenizer_matches(reward_model.backbone, tokenizer)
    check_preference_data(train_data, "training data", tokenizer, allow_empty_answers=True)
    if eval_data is not None:
        check_preference_data(eval_data, "evaluation data", allow_empty_answers=True)
    generator = seed_everything(config.seed)
    device = reward_model.device
    encoded = encode_distinct_answers(tokenizer, train_data, device, model=reward_model.backbone)
    optimizer, scheduler = _optimizer_and_schedule(reward_model, config)

    def evaluate() -> dict[str, float]:
        metrics = evaluate_reward_model(reward_model, tokenizer, eval_data)
        return {f"eval/{k}": v for k, v in metrics.items()}

    history, start = [], time.perf_counter()
    reward_model.train()
    for step in tqdm(range(config.steps), desc="Reward model", disable=not config.progress):
        rows = torch.randint(len(train_data), (config.batch_size,), generator=generator).to(device)
        chosen, rejected = score_pairs(reward_model, encoded, rows)
        loss = bradley_terry_loss(chosen, rejected)  # -log sigmoid(r_w - r_l)
        check_finite_loss(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(optimizer, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        last = step == config.steps - 1
        do_eval = eval_data is not None and (step % config.eval_every == 0 or last)
        if step % config.log_every == 0 or do_eval or last:
            record = {"step": step, **reward_metrics(chosen, rejected),
                      "learning_rate": scheduler.get_last_lr()[0],  # the backbone's, if it learns
                      "learning_rate/head": scheduler.get_last_lr()[-1], "time": time.perf_counter() - start}
            if do_eval:
                record.update(evaluate())
                reward_model.train()
            history.append(record)
    reward_model.eval()
    return history
