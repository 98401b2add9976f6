"""TRL's own trainers on the toy world, scored exactly. Install the extra: ``pip install -e ".[trl]"``.

minirlhf's world knows its optimum ``pi*`` exactly, which no industrial trainer's task does. This
module makes it a test bench for TRL's ``DPOTrainer`` and ``GRPOTrainer``:

* :func:`load_policy` gives the shipped tiny GPT (or any checkpoint) and its tokenizer, and a frozen
  copy as the reference, in the form TRL's trainers take (``model``, ``ref_model``, ``processing_class``);
* :func:`dpo_args` and :func:`grpo_args` turn minirlhf's ``DPOConfig`` / ``GRPOConfig`` into the
  keyword arguments of TRL's ``DPOConfig`` / ``GRPOConfig``, and :func:`freeze_like` keeps the blocks
  and embeddings fixed that minirlhf's config keeps fixed, so that both libraries train alike;
* :func:`true_reward_func` is the world's true reward in the form ``GRPOTrainer(reward_funcs=...)``
  takes (a verifiable reward: no reward model);
* :class:`ExactEvaluationCallback` evaluates the policy on the candidate sets every few steps and
  writes ``exact/attainment``, ``exact/kl``, ... into TRL's logs (``trainer.state.log_history``, the
  console, TensorBoard or W&B): the same numbers as minirlhf's own trainers log
  (:func:`minirlhf.evaluation.exact_metrics`).

This module imports only ``transformers`` (TRL's ``Trainer`` is one); the examples
``examples/trl_dpo.py`` and ``examples/trl_grpo.py`` import TRL itself. The exact evaluation encodes
prompt and answer apart, as minirlhf's word-level tokenizer does; on a checkpoint with a sub-word
tokenizer it scores each candidate as that tokenization spells it, which is close to, but not
exactly, the model's own probability of the text.
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback

from minirlhf import world
from minirlhf.dpo import DPOConfig
from minirlhf.evaluation import exact_metrics
from minirlhf.grpo import GRPOConfig
from minirlhf.models import load_base_model, transformer_blocks
from minirlhf.optimum import ExactEvaluator

# ---------------------------------------------------------------------------------------------
# The model, and minirlhf's settings in TRL's names
# ---------------------------------------------------------------------------------------------


def load_policy(path: str | None = None) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """``(policy, ref_model, tokenizer)`` for a TRL trainer: the shipped SFT tiny GPT by default, else the
    causal LM at ``path`` (a folder or a hub name; set ``HF_HUB_OFFLINE=0`` to download one).

    The policy is in training mode; ``ref_model`` is a frozen copy in eval mode (TRL's DPO needs its
    own copy to precompute the reference log-probs). A tokenizer without a PAD token gets EOS as PAD.
    """
    if path is None:
        policy, tokenizer = load_base_model()
    else:
        policy, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    ref_model = copy.deepcopy(policy).eval().requires_grad_(False)
    return policy.train(), ref_model, tokenizer


def freeze_like(model, frozen_blocks: int = 0, embedding_lr_scale: float = 1.0):
    """Keep fixed, as minirlhf's config does, the first ``frozen_blocks`` transformer blocks and, when
    ``embedding_lr_scale`` is 0, the token embeddings (GPT-2's output layer too: they are tied).
    TRL trains every parameter that has ``requires_grad``, at one rate: a scale other than 0 or 1
    needs a custom optimizer (``optimizers=...``) and is refused here. Returns ``model``."""
    if embedding_lr_scale not in (0, 1):
        raise ValueError(f"TRL trains all parameters at one rate: embedding_lr_scale must be 0 (frozen) or "
                         f"1, got {embedding_lr_scale}. For another, pass a custom optimizer to the trainer.")
    if frozen_blocks:
        for block in transformer_blocks(model)[:frozen_blocks]:
            block.requires_grad_(False)
    if embedding_lr_scale == 0:
        model.get_input_embeddings().requires_grad_(False)
    return model


def _common_args(config) -> dict:
    """TrainingArguments that every minirlhf config shares with TRL (see docs/where_next.md)."""
    return {"max_grad_norm": config.max_grad_norm, "warmup_steps": config.warmup_steps, "seed": config.seed}


def dpo_args(config: DPOConfig | None = None) -> dict:
    """Keyword arguments of ``trl.DPOConfig`` that train as minirlhf's :class:`~minirlhf.dpo.DPOConfig`
    does (its defaults when ``config`` is None): the same loss, rates, batch, epochs and cosine schedule.
    Apply :func:`freeze_like` to the policy for ``frozen_blocks`` and ``embedding_lr_scale``."""
    config = config or DPOConfig()
    # RPO's NLL term is TRL's "sft" loss (the chosen answers' NLL per token), weighted by rpo_alpha.
    losses = {config.loss_type: 1.0, **({"sft": config.rpo_alpha} if config.rpo_alpha > 0 else {})}
    return {**_common_args(config), "beta": config.beta, "loss_type": list(losses),
            "loss_weights": list(losses.values()), "label_smoothing": config.label_smoothing,
            "learning_rate": config.learning_rate, "num_train_epochs": config.epochs,
            "per_device_train_batch_size": config.batch_size, "lr_scheduler_type": "cosine",
            "weight_decay": config.weight_decay, "adam_beta2": config.adam_beta2,
            "adam_epsilon": config.adam_epsilon}


def grpo_args(config: GRPOConfig | None = None) -> dict:
    """Keyword arguments of ``trl.GRPOConfig`` that train as minirlhf's :class:`~minirlhf.grpo.GRPOConfig`
    does. Each minirlhf step samples ``prompts_per_step x group_size`` answers and makes
    ``epochs x minibatches`` optimizer steps on them; TRL counts optimizer steps, so ``max_steps`` is
    ``steps x epochs x minibatches``. TRL's GRPO puts the KL (k3) in the loss: ``config.kl`` must be
    ``"loss"``; RLOO is TRL's ``RLOOTrainer``, not an option of ``GRPOTrainer``."""
    config = config or GRPOConfig(kl="loss")
    if config.kl != "loss":
        raise ValueError('TRL\'s GRPOTrainer puts the KL in the loss (k3): use GRPOConfig(kl="loss").')
    if config.advantage == "rloo":
        raise ValueError("RLOO is TRL's RLOOTrainer; grpo_args maps GRPO and Dr. GRPO.")
    answers = config.prompts_per_step * config.group_size
    if answers % config.minibatches:
        raise ValueError(f"prompts_per_step x group_size ({answers}) must split into {config.minibatches} "
                         "minibatches.")
    optimizer_steps = config.epochs * config.minibatches
    return {**_common_args(config), "warmup_steps": config.warmup_steps * optimizer_steps,
            "beta": config.beta, "num_generations": config.group_size,
            "steps_per_generation": config.minibatches,
            "per_device_train_batch_size": answers // config.minibatches,
            "num_iterations": config.epochs, "epsilon": config.clip_range, "temperature": config.temperature,
            "max_completion_length": config.max_new_tokens, "max_steps": config.steps * optimizer_steps,
            "learning_rate": config.learning_rate or min(3e-4, 1e-4 / config.beta),
            "lr_scheduler_type": "linear", "adam_epsilon": config.adam_eps,
            "scale_rewards": "group" if config.advantage == "grpo" else "none",
            "loss_type": "grpo" if config.length_normalise else "dr_grpo"}


def run_args(threads: int | None = None) -> dict:
    """TrainingArguments for a quiet local run: CPU unless a GPU is there (bf16 on a GPU that has it),
    no checkpoints, no reporting, data loaded in the main process. ``threads`` sets torch's CPU threads."""
    if threads is not None:
        torch.set_num_threads(threads)
    gpu = torch.cuda.is_available()
    return {"use_cpu": not gpu, "bf16": gpu and torch.cuda.is_bf16_supported(), "report_to": "none",
            "save_strategy": "no", "dataloader_num_workers": 0, "disable_tqdm": True}


# ---------------------------------------------------------------------------------------------
# The reward and the yardstick
# ---------------------------------------------------------------------------------------------


def _text(item) -> str:
    """A prompt or completion as text: TRL passes strings (standard format) or chat messages."""
    return item if isinstance(item, str) else item[-1]["content"]


def true_reward_func(prompts: list, completions: list, **kwargs) -> list[float]:
    """The toy world's true reward (:func:`minirlhf.world.true_reward`) of each completion, as
    ``GRPOTrainer(reward_funcs=true_reward_func)`` calls it; TRL logs it as ``rewards/true_reward_func``.
    Prompts and completions may be strings or chat messages (the last message's content is scored).
    Shapes: B prompts and B completions -> B floats."""
    return [world.true_reward(_text(p), _text(c)) for p, c in zip(prompts, completions)]


class ExactEvaluationCallback(TrainerCallback):
    """Exact figures of the policy at ``beta`` every ``every`` optimizer steps (and at the first and
    the last), written into the trainer's logs as ``exact/attainment``, ``exact/true_reward``,
    ``exact/kl``, ``exact/p_correct``, ``exact/coverage`` (training prompts) and ``exact_held_out/...``
    (held-out prompts): minirlhf's :func:`~minirlhf.evaluation.exact_metrics` on the candidate sets.

    Attach it to a built trainer with ``ExactEvaluationCallback(ref_model, tokenizer, beta).attach(trainer)``:
    it logs through the trainer, so every logger (console, TensorBoard, W&B) sees the numbers. Every
    process evaluates (a forward pass over 24 x 48 candidates), so that sharded models work too; each
    record is also kept in :attr:`history`.
    """

    def __init__(self, ref_model, tokenizer, beta: float, every: int = 10, held_out: bool = True):
        train = ExactEvaluator(ref_model, tokenizer, world.prompts("train"))
        other = ExactEvaluator(ref_model, tokenizer, world.prompts("held_out")) if held_out else None
        self.evaluate = exact_metrics(train, beta, held_out=other)
        self.every = every
        self.trainer = None
        self.history: list[dict] = []  #: every evaluation so far, one dict of metrics each

    def summary(self) -> str:
        """The last evaluation in words: attainment (training and held-out prompts), KL, leak."""
        last = self.history[-1]
        return (f"exact attainment {last['exact/attainment']:.3f} (held-out countries "
                f"{last['exact_held_out/attainment']:.3f}), KL {last['exact/kl']:.3f}, "
                f"mass outside the candidate set {1 - last['exact/coverage']:.3f}")

    def attach(self, trainer: Trainer) -> ExactEvaluationCallback:
        """Add this callback to ``trainer`` and log through it; returns the callback."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def _record(self, step: int, model, control) -> None:
        if self.history and self.history[-1]["step"] == step:
            return
        was_training = model.training
        model.eval()
        metrics = self.evaluate(step, model)
        model.train(was_training)
        self.history.append({"step": step, **metrics})
        # Trainer.log, not TRL's override: TRL's would also flush (and so reset) its own running metrics.
        # Logging clears control.should_log: put it back, so that the trainer's own log of this step happens.
        should_log = control.should_log
        Trainer.log(self.trainer, dict(metrics))
        control.should_log = should_log

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Evaluate the starting point (step 0)."""
        if self.trainer is None:
            raise RuntimeError("ExactEvaluationCallback logs through its trainer: add it with "
                               "callback.attach(trainer), not with callbacks=[...].")
        self._record(state.global_step, model, control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        """Evaluate every ``every`` optimizer steps and at the last one."""
        if (self.every and state.global_step % self.every == 0) or state.global_step >= state.max_steps:
            self._record(state.global_step, model, control)
