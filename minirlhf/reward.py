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
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from tqdm.auto import tqdm

from minirlhf import world
from minirlhf.logprobs import encode_prompt_response, position_ids_from_mask, to_device
from minirlhf.sft import warmup_cosine
from minirlhf.utils import (
    check_checkpoint_dir,
    check_finite_loss,
    check_positive,
    json_safe,
    save_atomically,
    seed_everything,
)

REWARD_MODEL_FILE = "reward_model.json"


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


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row, shape (B,), for left *or* right padding.

    ``argmax`` of ``mask * [0, 1, ..., T-1]`` is the largest position whose mask is 1.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (B, T), got {tuple(attention_mask.shape)}.")
    if not attention_mask.bool().any(-1).all():
        raise ValueError("A row of attention_mask is all padding: every row needs a real token.")
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(-1)


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two 1-D sequences (ties get their average rank)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape or x.dim() != 1 or len(x) < 2:
        raise ValueError("rank_correlation needs two 1-D sequences of the same length >= 2.")

    def ranks(v):
        order = torch.argsort(v)
        rank = torch.empty_like(v)
        rank[order] = torch.arange(len(v), dtype=v.dtype)
        for value in v.unique():  # average the ranks of tied values
            tied = v == value
            rank[tied] = rank[tied].mean()
        return rank

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return float((rx @ ry).item() / denominator) if denominator > 0 else float("nan")


def ranking_agreement(learned, true) -> float:
    """Fraction of the pairs with *different* true values that ``learned`` orders the same way
    (a tie in ``learned`` counts 1/2). Unlike Spearman's rho it is 1 for any ordering that agrees
    with ``true``, even when ``true`` has ties; Goodman and Kruskal's gamma is ``2 * agreement - 1``."""
    learned, true = torch.as_tensor(learned, dtype=torch.float64), torch.as_tensor(true, dtype=torch.float64)
    better = (true[:, None] - true[None, :]) > 0  # [i, j]: i truly better than j
    if not better.any():
        raise ValueError("ranking_agreement needs at least two different true values.")
    diff = (learned[:, None] - learned[None, :])[better]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def best_rank_correlation(true) -> float:
    """The largest Spearman rho any score *without ties* can reach against ``true``: below 1
    when ``true`` has ties (on the toy world's 48 candidates, 23 answers share -1 and 23 share
    -1.5, so even a perfect reward model gets rho = 0.883)."""
    true = torch.as_tensor(true, dtype=torch.float64)
    return rank_correlation(true + 1e-9 * torch.arange(len(true)), true)


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
                                           responses[i:i + batch_size])
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

    # --- saving and loading: safetensors + JSON, no pickle -------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` (the backbone's), ``model.safetensors`` and ``reward_model.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        self.backbone.config.save_pretrained(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, path / "model.safetensors", metadata={"format": "pt"})
        info = {"kind": "minirlhf.RewardModel", "freeze_backbone": self.freeze_backbone,
                "attention_only": self.attention_only}
        (path / REWARD_MODEL_FILE).write_text(json.dumps(info, indent=2))

    def save(self, path: str | Path, tokenizer=None) -> Path:
        """Save the model (and ``tokenizer``, or the one it was loaded with) into ``path`` atomically."""
        tokenizer = tokenizer or self.tokenizer
        return save_atomically([self] + ([tokenizer] if tokenizer is not None else []), path)

    @classmethod
    def load(cls, path: str | Path, device=None) -> RewardModel:
        """Load a reward model saved by :meth:`save`, in eval mode; ``.tokenizer`` is the saved
        tokenizer (or None)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

        path = check_checkpoint_dir(path)
        if not (path / REWARD_MODEL_FILE).is_file():
            raise ValueError(f"{str(path)!r} holds no reward model (no {REWARD_MODEL_FILE}). To start "
                             "one from a causal LM use RewardModel.from_base(load_model(path)[0]).")
        info = json.loads((path / REWARD_MODEL_FILE).read_text())
        backbone = AutoModel.from_config(AutoConfig.from_pretrained(path))
        model = cls(backbone, freeze_backbone=info["freeze_backbone"],
                    attention_only=info.get("attention_only", False))
        model.load_state_dict(load_file(path / "model.safetensors"))
        if (path / "tokenizer.json").is_file():
            from minirlhf.models import check_tokenizer_matches

            model.tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
            model.tokenizer.padding_side = "left"
            check_tokenizer_matches(model.backbone, model.tokenizer)
        if device is not None:
            model.to(device)
        return model.eval()


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
    head_only_steps: int = 0
    """Train only the head for this many steps first (backbone frozen), then everything: "linear
    probing, then fine-tuning". A zero head would send random gradients into the SFT features."""
    warmup_steps: int = 10
    """Linear warm-up steps (of each phase)."""
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
        for name in ("steps", "batch_size", "learning_rate", "head_learning_rate", "log_every",
                     "eval_every", "max_grad_norm"):
            check_positive(name, getattr(self, name))
        for name in ("warmup_steps", "weight_decay", "head_only_steps"):
            check_positive(name, getattr(self, name), allow_zero=True)


def _check_preference_data(data, what: str) -> None:
    """Raise a ValueError unless ``data`` has the columns a reward model trains on."""
    names = getattr(data, "column_names", None)
    if names is None or any(c not in names for c in ("prompt", "chosen", "rejected")):
        raise ValueError(f"The {what} must be a Dataset with columns prompt, chosen, rejected; got "
                         f"{names}. minirlhf.preferences.load_preferences converts other data.")
    if len(data) == 0:
        raise ValueError(f"The {what} are empty.")


def encode_pairs(tokenizer, data: Dataset, device=None) -> dict[str, torch.Tensor]:
    """Tokenise each *distinct* (prompt, response) of ``data`` once, and index the pairs into them.

    Preference data repeat themselves (the SFT model gives the same few answers again and again),
    so scoring every distinct answer once per step is several times cheaper than scoring both
    sides of every pair, and gives exactly the same loss and gradient. Returns ``input_ids`` and
    ``attention_mask`` (U, T) of the U distinct sequences, and ``chosen`` / ``rejected`` (N,): the
    row of each pair's chosen / rejected answer.
    """
    prompts = list(data["prompt"])
    chosen = list(zip(prompts, data["chosen"]))
    rejected = list(zip(prompts, data["rejected"]))
    distinct = list(dict.fromkeys(chosen + rejected))
    row_of = {key: i for i, key in enumerate(distinct)}
    batch = encode_prompt_response(tokenizer, [p for p, _ in distinct], [r for _, r in distinct])
    encoded = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
               "chosen": torch.tensor([row_of[k] for k in chosen]),
               "rejected": torch.tensor([row_of[k] for k in rejected])}
    return to_device(encoded, device) if device is not None else encoded


def score_pairs(reward_model: RewardModel, encoded: dict[str, torch.Tensor], rows: torch.Tensor):
    """Scores ``(r_w, r_l)``, each (B,), of the pairs ``rows`` of :func:`encode_pairs`' data.

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
    prompts = list(data["prompt"])
    chosen, rejected = list(zip(prompts, data["chosen"])), list(zip(prompts, data["rejected"]))
    distinct = list(dict.fromkeys(chosen + rejected))
    scores = reward_model.score_texts(tokenizer, [p for p, _ in distinct], [r for _, r in distinct])
    score_of = dict(zip(distinct, scores.tolist()))
    return (torch.tensor([score_of[k] for k in chosen]), torch.tensor([score_of[k] for k in rejected]))


def evaluate_reward_model(reward_model: RewardModel, tokenizer, data: Dataset) -> dict[str, float]:
    """:func:`reward_metrics` over all pairs of ``data`` (no gradients)."""
    _check_preference_data(data, "evaluation data")
    return reward_metrics(*score_preference_pairs(reward_model, tokenizer, data))


def _optimizer_and_schedule(reward_model: RewardModel, config: RewardConfig):
    """AdamW with two parameter groups (head, backbone), each with a warm-up + cosine schedule;
    the backbone's starts after ``head_only_steps``."""
    head_schedule = functools.partial(warmup_cosine, total=config.steps, warmup=config.warmup_steps)
    groups, schedules = [{"params": list(reward_model.head.parameters()),
                          "lr": config.head_learning_rate}], [head_schedule]
    if not reward_model.freeze_backbone:
        start = min(config.head_only_steps, config.steps - 1)
        groups.append({"params": list(reward_model.backbone.parameters()), "lr": config.learning_rate})
        schedules.append(lambda s: 0.0 if s < start else
                         warmup_cosine(s - start, config.steps - start, config.warmup_steps))
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)


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
    _check_preference_data(train_data, "training data")
    if eval_data is not None:
        _check_preference_data(eval_data, "evaluation data")
    generator = seed_everything(config.seed)
    device = reward_model.device
    encoded = encode_pairs(tokenizer, train_data, device)
    optimizer, scheduler = _optimizer_and_schedule(reward_model, config)

    def evaluate() -> dict[str, float]:
        metrics = evaluate_reward_model(reward_model, tokenizer, eval_data)
        return {f"eval/{k}": v for k, v in metrics.items()}

    history, start = [], time.perf_counter()
    trainable = {name: p.requires_grad for name, p in reward_model.backbone.named_parameters()}
    reward_model.train()
    for step in tqdm(range(config.steps), desc="Reward model", disable=not config.progress):
        linear_probing = step < config.head_only_steps  # no backbone gradients yet
        for name, parameter in reward_model.backbone.named_parameters():
            parameter.requires_grad_(trainable[name] and not linear_probing)
        rows = torch.randint(len(train_data), (config.batch_size,), generator=generator).to(device)
        chosen, rejected = score_pairs(reward_model, encoded, rows)
        loss = bradley_terry_loss(chosen, rejected)  # -log sigmoid(r_w - r_l)
        check_finite_loss(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reward_model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        last = step == config.steps - 1
        do_eval = eval_data is not None and (step % config.eval_every == 0 or last)
        if step % config.log_every == 0 or do_eval or last:
            record = {"step": step, **reward_metrics(chosen, rejected),
                      "learning_rate": scheduler.get_last_lr()[-1],  # the backbone's, if it learns
                      "learning_rate/head": scheduler.get_last_lr()[0], "time": time.perf_counter() - start}
            if do_eval:
                record.update(evaluate())
                reward_model.train()
            history.append(record)
    for name, parameter in reward_model.backbone.named_parameters():
        parameter.requires_grad_(trainable[name])
    reward_model.eval()
    return history


# ---------------------------------------------------------------------------------------------
# The default stage, and what the tutorial measures
# ---------------------------------------------------------------------------------------------

# The reward model needs more pairs than DPO's default data (16 per prompt): with fewer, it does
# not learn reliably which city goes with which country (see benchmarks/reward_model.py).
REWARD_PAIRS_PER_PROMPT = 128


def train_default_reward_model(seed: int = 0, progress: bool = True, freeze_backbone: bool = False,
                               attention_only: bool = True, config: RewardConfig | None = None,
                               pairs_per_prompt: int = REWARD_PAIRS_PER_PROMPT):
    """The tutorial's reward-model stage in one call: preference data from the shipped SFT model
    (:func:`~minirlhf.preferences.default_preferences` with ``pairs_per_prompt``), a reward model
    started from the SFT weights, trained with the default :class:`RewardConfig`.

    By default only the head and the backbone's attention layers learn (``attention_only``): on
    this tiny model that generalises better to country/city combinations the data never showed
    than full fine-tuning does. Returns ``(reward_model, tokenizer, data, history)``; ``data`` is
    the train/test DatasetDict, and the history carries ``eval/...`` metrics on the test pairs.
    """
    from minirlhf.preferences import default_preferences
    from minirlhf.sft import load_base_model

    base, tokenizer = load_base_model()
    data = default_preferences(pairs_per_prompt=pairs_per_prompt, seed=seed, progress=progress)
    torch.manual_seed(seed)
    reward_model = RewardModel.from_base(base, freeze_backbone=freeze_backbone,
                                         attention_only=attention_only and not freeze_backbone)
    config = config or RewardConfig(seed=seed, progress=progress)
    history = train_reward_model(reward_model, tokenizer, data["train"], config, eval_data=data["test"])
    return reward_model, tokenizer, data, history


def candidate_scores(reward_model: RewardModel, tokenizer, prompt: str, data: Dataset | None = None) -> dict:
    """Learned and true reward of every candidate answer of ``prompt`` (the toy world's 48).

    Returns ``{"responses", "kinds", "learned", "true"}`` (lists of the same length), and with
    preference ``data`` also ``"seen"``: how often each answer appears in the data's pairs for
    ``prompt`` (the reward model knows only what the data show it; elsewhere it extrapolates).
    """
    responses = world.candidate_responses(prompt)
    learned = reward_model.score_texts(tokenizer, [prompt] * len(responses), responses)
    scores = {"responses": responses,
              "kinds": [world.classify_response(prompt, r) for r in responses],
              "learned": learned.tolist(),
              "true": [world.true_reward(prompt, r) for r in responses]}
    if data is not None:
        shown = [y for p, c, r in zip(data["prompt"], data["chosen"], data["rejected"]) if p == prompt
                 for y in (c, r)]
        scores["seen"] = [shown.count(r) for r in responses]
    return scores


def expected_accuracy(reward_model: RewardModel, tokenizer, data: Dataset, rater=None) -> float:
    """Accuracy the model's ranking would get against the rater *on average* over its labels.

    For each pair the rater labels the answer it prefers with probability p; a model that ranks
    it first agrees with probability p, otherwise 1 - p. Free of label noise, so it is the fair
    counterpart of :func:`~minirlhf.preferences.bayes_optimal_accuracy` (same pairs, best = max(p, 1-p)).
    """
    rater = rater or world.SimulatedRater()
    chosen, rejected = score_preference_pairs(reward_model, tokenizer, data)
    total = 0.0
    for i, (prompt, y_w, y_l) in enumerate(zip(data["prompt"], data["chosen"], data["rejected"])):
        p = rater.prob_prefers_first(prompt, y_w, y_l)
        diff = (chosen[i] - rejected[i]).item()
        total += p if diff > 0 else (1 - p) if diff < 0 else 0.5
    return total / len(data)


def margin_calibration(reward_model: RewardModel, tokenizer, data: Dataset) -> dict[float, dict]:
    """Learned against true reward margins on the pairs of ``data`` (with true-reward columns).

    Each pair is oriented so that its first answer has the higher *true* reward (pairs of equal
    true reward are left out); returns, for each true margin ``r(x, y1) - r(x, y2)``, the number of
    pairs and the mean learned margin ``r_phi(x, y1) - r_phi(x, y2)``. With a temperature-1
    Bradley-Terry rater the two should agree: the reward model learns the true reward's *scale*.
    """
    chosen, rejected = score_preference_pairs(reward_model, tokenizer, data)
    groups: dict[float, list[float]] = {}
    for learned_w, learned_l, true_w, true_l in zip(chosen.tolist(), rejected.tolist(),
                                                    data["chosen_reward"], data["rejected_reward"]):
        if true_w == true_l:
            continue
        sign = 1.0 if true_w > true_l else -1.0
        groups.setdefault(abs(true_w - true_l), []).append(sign * (learned_w - learned_l))
    return {margin: {"pairs": len(v), "learned_margin": sum(v) / len(v)}
            for margin, v in sorted(groups.items())}


def reward_model_report(reward_model: RewardModel, tokenizer, data, prompt: str | None = None) -> dict:
    """The numbers the tutorial's targets are about, for a trained reward model and its
    train/test ``data``:

    * ``test_accuracy`` (held-out pairs, against the rater's noisy labels), the rater's
      ``bayes_optimal_accuracy`` on the same pairs and their ``accuracy_ratio``;
    * ``expected_test_accuracy`` and its ratio: the same without label noise (see
      :func:`expected_accuracy`);
    * over the candidate set of ``prompt`` (France by default): Spearman's ``rank_correlation``
      of learned and true reward, the ``best_rank_correlation`` possible there, and the
      ``ranking_agreement`` (pairs of answers ordered as the true reward orders them), also over
      only the candidates that the training pairs show (``ranking_agreement_seen``);
    * the learned reward of the correct, hedging and "Berlin" answers to ``prompt``.
    """
    from minirlhf.preferences import bayes_optimal_accuracy

    test = data["test"]
    prompt = prompt or world.make_prompt("France")
    accuracy = evaluate_reward_model(reward_model, tokenizer, test)["accuracy"]
    bayes = bayes_optimal_accuracy(test)
    expected = expected_accuracy(reward_model, tokenizer, test)
    scores = candidate_scores(reward_model, tokenizer, prompt, data["train"])
    seen = [i for i, count in enumerate(scores["seen"]) if count > 0]
    country = world.country_of_prompt(prompt)
    wrong_city = "Berlin" if country != "Germany" else "Paris"
    examples = [world.make_response(country, "correct"), world.make_response(country, "hedge"),
                world.make_response(country, "wrong", wrong_city)]
    correct, hedge, wrong = reward_model.score_texts(tokenizer, [prompt] * 3, examples).tolist()
    return {
        "test_accuracy": accuracy,
        "bayes_optimal_accuracy": bayes,
        "accuracy_ratio": accuracy / bayes,
        "expected_test_accuracy": expected,
        "expected_accuracy_ratio": expected / bayes,
        "rank_correlation": rank_correlation(scores["learned"], scores["true"]),
        "best_rank_correlation": best_rank_correlation(scores["true"]),
        "ranking_agreement": ranking_agreement(scores["learned"], scores["true"]),
        "ranking_agreement_seen": ranking_agreement([scores["learned"][i] for i in seen],
                                                    [scores["true"][i] for i in seen]),
        "n_candidates_seen": len(seen),
        "reward_correct": correct,
        "reward_hedge": hedge,
        f"reward_{wrong_city.lower()}": wrong,
        "n_test_pairs": len(test),
    }


def demo_stage(outdir: Path, quick: bool = False) -> dict:
    """The reward-model stage of ``minirlhf demo``: collect preferences, train the default reward
    model, save figures into ``outdir`` and return JSON-able metrics, plus the objects under
    ``reward_model``, ``tokenizer`` and ``preferences`` (pop them before dumping JSON).

    ``quick``: a smoke run of a few seconds (few pairs, few steps); its numbers mean little.
    """

    from minirlhf import plots
    from minirlhf.preferences import collect_preferences
    from minirlhf.sft import load_base_model

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if quick:
        base, tokenizer = load_base_model()
        data = collect_preferences(base, tokenizer, world.prompts("train")[:6], pairs_per_prompt=6,
                                   progress=False).train_test_split(test_size=0.25, seed=0)
        reward_model = RewardModel.from_base(base, attention_only=True)
        history = train_reward_model(reward_model, tokenizer, data["train"],
                                     RewardConfig(steps=20, eval_every=10, progress=False),
                                     eval_data=data["test"])
    else:
        reward_model, tokenizer, data, history = train_default_reward_model()  # with progress bars
    metrics = {"reward/train_seconds": history[-1]["time"],
               "reward/stage_seconds": time.perf_counter() - start,
               "reward/n_train_pairs": len(data["train"])}
    metrics.update({f"reward/{k}": v for k, v in
                    reward_model_report(reward_model, tokenizer, data).items()})
    figures = {
        "reward_training.png": plots.plot_history(
            history, ["loss", "accuracy", "margin", "eval/accuracy", "reward/mean", "reward/max"],
            title="Reward model training"),
        "reward_learned_vs_true.png": plots.plot_learned_vs_true_reward(
            candidate_scores(reward_model, tokenizer, world.make_prompt("France"), data["train"])),
        "reward_margin_calibration.png": plots.plot_margin_calibration(
            margin_calibration(reward_model, tokenizer, data["test"])),
        "preference_pairs.png": plots.plot_preference_pairs(data["train"]),
    }
    metrics["reward/figures"] = plots.save_figures(figures, outdir)
    metrics = json_safe(metrics)
    metrics.update({"reward_model": reward_model, "tokenizer": tokenizer, "preferences": data})
    return metrics
