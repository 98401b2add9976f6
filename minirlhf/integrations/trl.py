"""TRL's own trainers on the toy world, scored exactly. Install the extra: ``pip install -e ".[trl]"``.

minirlhf's world knows its optimum ``pi*`` exactly, which no industrial trainer's task does. This
module makes it a test bench for TRL's ``DPOTrainer``, ``GRPOTrainer``, ``RLOOTrainer``, ``KTOTrainer``
and ``CPOTrainer`` (SimPO):

* :func:`load_policy` gives the shipped tiny GPT (or any checkpoint) and its tokenizer, and a frozen
  copy as the reference, in the form TRL's trainers take (``model``, ``ref_model``, ``processing_class``);
* :func:`dpo_args`, :func:`grpo_args`, :func:`rloo_args`, :func:`kto_args` and :func:`simpo_args` turn
  minirlhf's ``DPOConfig`` / ``GRPOConfig`` / ``KTOConfig`` into the keyword arguments of TRL's
  ``DPOConfig`` / ``GRPOConfig`` / ``RLOOConfig`` / ``KTOConfig`` / ``CPOConfig``, and :func:`freeze_like`
  keeps the blocks and embeddings fixed that minirlhf's config keeps fixed, so that both libraries
  train alike;
* :func:`true_reward_func` is the world's true reward in the form ``GRPOTrainer(reward_funcs=...)``
  takes (a verifiable reward: no reward model);
* :class:`ExactEvaluationCallback` evaluates the policy on the candidate sets every few steps and
  writes ``exact/attainment``, ``exact/kl``, ... into TRL's logs (``trainer.state.log_history``, the
  console, TensorBoard or W&B): the same numbers as minirlhf's own trainers log
  (:func:`minirlhf.evaluation.exact_metrics`).

Several processes (``torchrun --nproc_per_node N`` or ``accelerate launch``): :func:`world_size` reads
how many were started, :func:`dpo_args` and :func:`grpo_args` then split minirlhf's batch over them
(global batch = per-device batch x processes x gradient accumulation steps, the single-process
batch by default), :func:`shared_dataset` puts the training data where every process finds the
cache files TRL writes beside it, and the callback evaluates on the main process only.

This module imports only ``transformers`` (TRL's ``Trainer`` is one); the examples
``examples/trl_dpo.py`` and ``examples/trl_grpo.py`` import TRL itself. The exact evaluation scores
each candidate answer after a space, as TRL's data spell it (:class:`AnswerEvaluator`): with
minirlhf's word-level tokenizer the figures are :class:`~minirlhf.optimum.ExactEvaluator`'s, and with
a byte-level BPE tokenizer (a real checkpoint's) the scored tokens are those of the text TRL trains on.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable

import torch
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback

from minirlhf import world
from minirlhf.dpo import DPOConfig
from minirlhf.evaluation import exact_metrics
from minirlhf.export import answer_text
from minirlhf.grpo import GRPOConfig
from minirlhf.kto import KTOConfig
from minirlhf.logprobs import response_logprobs
from minirlhf.optimum import ExactEvaluator
from minirlhf.saved_models import load_base_model
from minirlhf.training import transformer_blocks

# ---------------------------------------------------------------------------------------------
# The model
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


# ---------------------------------------------------------------------------------------------
# Several processes: how many, and the batch each one trains on
# ---------------------------------------------------------------------------------------------


def world_size() -> int:
    """How many processes this run has: ``WORLD_SIZE``, which ``torchrun`` and ``accelerate launch``
    set for every process they start (or MPI's size); 1 for a plain ``python`` run. Readable before
    the trainer starts the processes' group, so that the batch can be split first."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def check_launch() -> None:
    """Refuse a run that asked for several processes and got one.

    ``accelerate launch --cpu --num_processes N`` starts a single plain process: accelerate starts
    several CPU processes only through MPI (``mpirun``). What gives it away is the rendezvous address
    that accelerate sets for several processes (``MASTER_ADDR``, ``MASTER_PORT``) with no
    ``WORLD_SIZE`` beside it."""
    asked_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if asked_cpu and os.environ.get("MASTER_PORT") and world_size() == 1 and "RANK" not in os.environ:
        raise SystemExit(
            "accelerate launch --cpu started one process, not the several asked for (--num_processes): "
            "accelerate starts several CPU processes only through MPI. Launch with the config file "
            "that ships with the examples, `accelerate launch --config_file examples/accelerate_cpu.yaml "
            "examples/<script>.py`, or with `torchrun --nproc_per_node N examples/<script>.py`; "
            "for one process, leave out --num_processes (and unset MASTER_PORT).")


def per_device_batch(global_batch: int, processes: int = 1, accumulation: int = 1,
                     what: str = "examples", fix: str = "") -> int:
    """The per-device batch that keeps ``global_batch`` examples per optimizer step over ``processes``
    processes and ``accumulation`` gradient accumulation steps:
    ``global batch = per-device batch x processes x accumulation``. Refuses a split that is not exact,
    naming the process counts that divide the batch (and ``fix``, another way out)."""
    if processes < 1 or accumulation < 1:
        raise ValueError(f"processes and accumulation must be >= 1, got {processes} and {accumulation}.")
    if global_batch % (processes * accumulation):
        fits = [n for n in range(1, global_batch + 1) if global_batch % (n * accumulation) == 0]
        raise ValueError(
            f"A global batch of {global_batch} {what} per optimizer step does not split evenly over "
            f"{processes} processes x {accumulation} gradient accumulation steps (global batch = per-device "
            f"batch x processes x accumulation). Run {', '.join(map(str, fits[:6]))} processes"
            f"{' (with this accumulation)' if accumulation > 1 else ''}{', ' + fix if fix else ''}.")
    return global_batch // (processes * accumulation)


# ---------------------------------------------------------------------------------------------
# minirlhf's configs in TRL's names
# ---------------------------------------------------------------------------------------------


def _common_args(config) -> dict:
    """TrainingArguments that every minirlhf config shares with TRL (see docs/where_next.md)."""
    return {"max_grad_norm": config.max_grad_norm, "warmup_steps": config.warmup_steps, "seed": config.seed}


def dpo_args(config: DPOConfig | None = None, processes: int = 1, accumulation: int = 1) -> dict:
    """Keyword arguments of ``trl.DPOConfig`` that train as minirlhf's :class:`~minirlhf.dpo.DPOConfig`
    does (its defaults when ``config`` is None): the same loss, rates, batch, epochs and cosine schedule.
    Apply :func:`freeze_like` to the policy for ``frozen_blocks`` and ``embedding_lr_scale``.

    ``config.batch_size`` is the global batch (pairs per optimizer step), split over ``processes``
    and ``accumulation`` gradient accumulation steps by :func:`per_device_batch`."""
    config = config or DPOConfig()
    if config.loss_type == "simpo":
        raise ValueError('TRL 1.16\'s DPOTrainer has no SimPO: it is trl.experimental.cpo.CPOTrainer with '
                         'CPOConfig(loss_type="simpo", cpo_alpha=0.0).')
    batch = per_device_batch(config.batch_size, processes, accumulation, "pairs",
                             "or change the batch (--batch-size) or --gradient-accumulation-steps")
    # RPO's NLL term is TRL's "sft" loss (the chosen answers' NLL per token), weighted by rpo_alpha.
    losses = {config.loss_type: 1.0, **({"sft": config.rpo_alpha} if config.rpo_alpha > 0 else {})}
    return {**_common_args(config), "beta": config.beta, "loss_type": list(losses),
            "loss_weights": list(losses.values()), "label_smoothing": config.label_smoothing,
            "learning_rate": config.learning_rate, "num_train_epochs": config.epochs,
            "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
            "lr_scheduler_type": "cosine",
            "weight_decay": config.weight_decay, "adam_beta2": config.adam_beta2,
            "adam_epsilon": config.adam_epsilon}


def grpo_args(config: GRPOConfig | None = None, processes: int = 1, accumulation: int = 1) -> dict:
    """Keyword arguments of ``trl.GRPOConfig`` that train as minirlhf's :class:`~minirlhf.grpo.GRPOConfig`
    does. Each minirlhf step samples ``prompts_per_step x group_size`` answers and makes
    ``epochs x minibatches`` optimizer steps on them; TRL counts optimizer steps, so ``max_steps`` is
    ``steps x epochs x minibatches``. TRL's GRPO puts the KL (k3) in the loss: ``config.kl`` must be
    ``"loss"``; RLOO is TRL's ``RLOOTrainer``, not an option of ``GRPOTrainer``. The variants map by
    name (``loss_type``, ``epsilon_high``, ``importance_sampling_level``, ``mask_truncated_completions``,
    ``use_bias_correction_kl``); TRL has no dynamic sampling, and DAPO's soft overlong punishment is its
    reward function ``trl.rewards.get_soft_overlong_punishment``, which the caller adds.

    The answers of one optimizer step (``prompts_per_step x group_size / minibatches``) are the global
    batch, split over ``processes`` and ``accumulation`` gradient accumulation steps by
    :func:`per_device_batch`; the answers sampled at once stay ``prompts_per_step x group_size``.

    One difference has no switch in TRL's config: its linear schedule lowers the rate at every optimizer
    step (from 0, during the warm-up), minirlhf's once per batch of answers. It is small, but GSPO's tiny
    clip range shows it (``docs/variants.md``); to remove it, pass TRL's trainer an optimizer and a
    ``LambdaLR`` (``optimizers=...``) as ``benchmarks/scoreboard.py`` does."""
    config = config or GRPOConfig(kl="loss")
    if config.kl != "loss":
        raise ValueError('TRL\'s GRPOTrainer puts the KL in the loss (k3): use GRPOConfig(kl="loss").')
    if config.advantage == "rloo":
        raise ValueError("RLOO is TRL's RLOOTrainer; grpo_args maps GRPO and Dr. GRPO.")
    if config.dynamic_sampling:
        raise ValueError("TRL 1.16's GRPOTrainer has no dynamic sampling (dropping groups of equal rewards).")
    answers = config.prompts_per_step * config.group_size
    if answers % config.minibatches:
        raise ValueError(f"prompts_per_step x group_size ({answers}) must split into {config.minibatches} "
                         "minibatches.")
    batch = per_device_batch(answers // config.minibatches, processes, accumulation, "answers",
                             "or change the prompts per step (--prompts-per-step) or "
                             "--gradient-accumulation-steps")
    optimizer_steps = config.epochs * config.minibatches
    return {**_common_args(config), "warmup_steps": config.warmup_steps * optimizer_steps,
            "beta": config.beta, "num_generations": config.group_size,
            "steps_per_generation": config.minibatches * accumulation,
            "gradient_accumulation_steps": accumulation, "per_device_train_batch_size": batch,
            "num_iterations": config.epochs, "epsilon": config.clip_range, "temperature": config.temperature,
            "max_completion_length": config.max_new_tokens, "max_steps": config.steps * optimizer_steps,
            "learning_rate": config.learning_rate or min(3e-4, 1e-4 / config.beta),
            "lr_scheduler_type": "linear", "adam_epsilon": config.adam_eps,
            "scale_rewards": "group" if config.advantage == "grpo" else "none",
            "loss_type": config.aggregation(), "epsilon_high": config.epsilon_high,
            "importance_sampling_level": config.importance_sampling_level,
            "mask_truncated_completions": config.mask_truncated_completions,
            "use_bias_correction_kl": config.use_bias_correction_kl}


def rloo_args(config: GRPOConfig | None = None, processes: int = 1, accumulation: int = 1) -> dict:
    """Keyword arguments of ``trl.RLOOConfig`` for minirlhf's ``GRPOConfig(advantage="rloo")``: the same
    groups, batch, epochs, clip range, rates and schedule as :func:`grpo_args`. Both put the KL in the
    reward, ``R - beta * sum_t (log pi_old - log pi_ref)`` (minirlhf's ``kl="reward"``, k1), and both take
    the leave-one-out baseline without scaling it (TRL's ``normalize_advantages=False``).

    One difference has no switch: TRL's RLOO clips one ratio per answer, ``exp(sum_t log r_t)``, and
    averages over answers; minirlhf's clips each token's ratio and sums the tokens over a constant (Dr.
    GRPO's aggregation). On fresh samples (ratio 1) the gradients differ by that constant only, which
    Adam's normalisation absorbs; they part once later minibatches move the ratios."""
    config = config or GRPOConfig(advantage="rloo")
    if config.advantage != "rloo" or config.kl != "reward":
        raise ValueError('TRL\'s RLOOTrainer is GRPOConfig(advantage="rloo", kl="reward"): the leave-one-out '
                         'baseline, with the KL in the reward.')
    if config.dynamic_sampling or config.importance_sampling_level != "token" or config.loss_type is not None:
        raise ValueError("TRL 1.16's RLOOTrainer has no dynamic sampling, sequence-level ratio or "
                         "loss_type.")
    shared = ("seed", "max_grad_norm", "warmup_steps", "beta", "num_generations", "steps_per_generation",
              "gradient_accumulation_steps", "per_device_train_batch_size", "num_iterations", "epsilon",
              "epsilon_high", "temperature", "max_completion_length", "max_steps", "learning_rate",
              "lr_scheduler_type", "adam_epsilon", "mask_truncated_completions")
    # grpo_args refuses RLOO and a KL in the reward: ask it for GRPO's, keep the keys the two share
    args = grpo_args(dataclasses.replace(config, advantage="dr_grpo", kl="loss"), processes, accumulation)
    return {**{key: args[key] for key in shared}, "normalize_advantages": False}


def kto_args(config: KTOConfig | None = None, processes: int = 1, accumulation: int = 1) -> dict:
    """Keyword arguments of ``trl.KTOConfig`` that train as minirlhf's :class:`~minirlhf.kto.KTOConfig`
    does: the same loss (``loss_type="kto"``), weights, rates, batch, epochs and cosine schedule. Apply
    :func:`freeze_like` for ``frozen_blocks`` and ``embedding_lr_scale``. Both estimate the reference
    point z0 on each batch's mismatched pairs; ``config.batch_size`` is the global batch (answers per
    optimizer step), split as :func:`dpo_args` splits pairs."""
    config = config or KTOConfig()
    batch = per_device_batch(config.batch_size, processes, accumulation, "answers",
                             "or change the batch or the gradient accumulation steps")
    return {**_common_args(config), "beta": config.beta, "loss_type": "kto",
            "desirable_weight": config.desirable_weight, "undesirable_weight": config.undesirable_weight,
            "learning_rate": config.learning_rate, "num_train_epochs": config.epochs,
            "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
            "lr_scheduler_type": "cosine", "weight_decay": config.weight_decay,
            "adam_beta2": config.adam_beta2, "adam_epsilon": config.adam_epsilon}


def kto_dataset(feedback: Dataset, seed: int = 0) -> Dataset:
    """TRL's unpaired rows for ``KTOTrainer`` from :func:`minirlhf.kto.unpaired_feedback`'s (``prompt``,
    ``completion``, ``label``): each answer spelled as TRL's data spell it
    (:func:`~minirlhf.export.answer_text`), the rows shuffled with ``seed``.

    The shuffle matters. TRL's ``KTOTrainer`` builds the mismatched pairs of its reference point once,
    before training, by rotating each run of ``per_device_train_batch_size`` consecutive rows by one.
    ``unpaired_feedback`` lists each prompt's answers together, so unshuffled, almost every "mismatched"
    pair is an answer to its own prompt, and z0 becomes the policy's KL on its own prompts."""
    return feedback.map(lambda row: {"completion": answer_text(row["completion"])}).shuffle(seed=seed)


def simpo_args(config: DPOConfig, processes: int = 1, accumulation: int = 1) -> dict:
    """Keyword arguments of ``trl.experimental.cpo.CPOConfig`` for minirlhf's
    ``DPOConfig(loss_type="simpo")``: TRL 1.16's SimPO is its CPO trainer with ``loss_type="simpo"``,
    whose NLL term on the chosen answers, weighted ``cpo_alpha``, is minirlhf's ``rpo_alpha`` ("CPO-SimPO";
    ``cpo_alpha=0`` is plain SimPO). The rest as :func:`dpo_args`."""
    if config.loss_type != "simpo":
        raise ValueError(f'simpo_args maps DPOConfig(loss_type="simpo"), got loss_type={config.loss_type!r}: '
                         "use dpo_args.")
    args = dpo_args(dataclasses.replace(config, loss_type="sigmoid", rpo_alpha=0.0), processes, accumulation)
    del args["loss_weights"]
    return {**args, "loss_type": "simpo", "simpo_gamma": config.simpo_gamma, "cpo_alpha": config.rpo_alpha}


def run_args(threads: int | None = None) -> dict:
    """TrainingArguments for a quiet local run: CPU unless a GPU is there (bf16 on a GPU that has it),
    no checkpoints, no reporting, data loaded in the main process. ``threads`` sets torch's CPU threads."""
    if threads is not None:
        torch.set_num_threads(threads)
    gpu = torch.cuda.is_available()
    return {"use_cpu": not gpu, "bf16": gpu and torch.cuda.is_bf16_supported(), "report_to": "none",
            "save_strategy": "no", "dataloader_num_workers": 0, "disable_tqdm": True}


def shared_dataset(build: Callable[[], Dataset], folder: str, args) -> Dataset:
    """The dataset that ``build()`` returns, built and saved into ``folder`` by the main process and
    loaded from there by every process; ``args`` is the trainer's config (TRL's ``DPOConfig``,
    ``GRPOConfig``, any ``TrainingArguments``). The other processes wait for the main one, and never
    build it: all train on the very same rows.

    Why: a dataset built in memory (``Dataset.from_dict``) has no folder of its own, so each process
    writes the cache files of its ``map`` calls into a private temporary folder, under a random name.
    TRL's ``DPOTrainer(precompute_ref_log_probs=True)`` has the main process write the reference
    log-probs into such a cache file and the other processes open the same path, which for them does
    not exist (``FileNotFoundError: .../hf_datasets-*/cache-*.arrow``). A dataset loaded from a folder
    keeps its cache files in that folder, under names derived from the data and the map (TRL tokenizes
    on the main process first, so the others find its files). With several machines, ``folder`` must be
    on a file system they share."""
    with args.main_process_first(local=False, desc="building the training data"):
        if args.process_index == 0:
            build().save_to_disk(folder)
        return load_from_disk(folder)


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


class AnswerEvaluator(ExactEvaluator):
    """minirlhf's :class:`~minirlhf.optimum.ExactEvaluator`, with each candidate answer spelled as TRL's
    data spell it: after a space (:func:`minirlhf.export.answer_text`), e.g.
    ``" The capital of France is Paris."``, scored after the prompt ``"... A:"``.

    minirlhf's word-level tokenizer ignores the space, so the figures are
    :class:`~minirlhf.optimum.ExactEvaluator`'s. A sub-word tokenizer does not: ``"The"`` and
    ``" The"`` are different tokens, and the model trained on ``"A: The ..."`` has only ever seen
    the second. For byte-level BPE tokenizers (GPT-2's, Llama 3's,
    Qwen's), which never merge a token across a space, prompt and spaced answer encoded apart are the
    tokens of the whole text, those TRL trains on; other tokenizers may spell the joined text a little
    differently, and the evaluation then scores the model's probability of one spelling of the text.
    """

    def set_probs(self, model) -> torch.Tensor:
        """pi(" y" | x) of ``model`` for every candidate y of every prompt x. Shape (N prompts, K)."""
        pairs = [(p, answer_text(y)) for p, ys in zip(self.prompts, self.candidates) for y in ys]
        logp = response_logprobs(model, self.tokenizer, [p for p, _ in pairs], [y for _, y in pairs])
        return logp.exp().view(len(self.prompts), -1)


class ExactEvaluationCallback(TrainerCallback):
    """Exact figures of the policy at ``beta`` every ``every`` optimizer steps (and at the first and
    the last), written into the trainer's logs as ``exact/attainment``, ``exact/true_reward``,
    ``exact/kl``, ``exact/p_correct``, ``exact/coverage`` (training prompts) and ``exact_held_out/...``
    (held-out prompts): minirlhf's :func:`~minirlhf.evaluation.exact_metrics` on the candidate sets.

    Attach it to a built trainer with ``ExactEvaluationCallback(ref_model, tokenizer, beta).attach(trainer)``:
    it logs through the trainer, so every logger (console, TensorBoard, W&B) sees the numbers; each
    record is also kept in :attr:`history`. Answers are scored as TRL's data spell them
    (:class:`AnswerEvaluator`).

    With several processes, the main process alone evaluates the policy (a forward pass over 24 x 48
    candidates), logs and keeps :attr:`history` (empty on the others; each process computes the
    reference's table once, when the callback is built); under FSDP or DeepSpeed, whose weights may be
    sharded, every process takes part in the forward pass and the main process logs. A run that
    made no optimizer step is refused when training ends, with the likely cause.
    """

    def __init__(self, ref_model, tokenizer, beta: float, every: int = 10, held_out: bool = True):
        train = AnswerEvaluator(ref_model, tokenizer, world.prompts("train"))
        other = AnswerEvaluator(ref_model, tokenizer, world.prompts("held_out")) if held_out else None
        self.evaluate = exact_metrics(train, beta, held_out=other)
        self.every = every
        self.trainer = None
        self.everywhere = False
        self.last_step: int | None = None
        self.history: list[dict] = []  #: every evaluation so far, one dict of metrics each

    def summary(self) -> str:
        """The last evaluation in words (on the main process): attainment (training and held-out
        prompts), KL, leak."""
        if not self.history:
            raise RuntimeError("No exact evaluation here: only the main process evaluates (see "
                               "state.is_world_process_zero), after trainer.train() has started.")
        last = self.history[-1]
        return (f"exact attainment {last['exact/attainment']:.3f} (held-out countries "
                f"{last['exact_held_out/attainment']:.3f}), KL {last['exact/kl']:.3f}, "
                f"mass outside the candidate set {1 - last['exact/coverage']:.3f}")

    def attach(self, trainer: Trainer) -> ExactEvaluationCallback:
        """Add this callback to ``trainer`` and log through it; returns the callback."""
        self.trainer = trainer
        # Sharded weights are gathered inside each forward pass, which needs every process.
        self.everywhere = bool(trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled)
        trainer.add_callback(self)
        return self

    def _record(self, state, model, control) -> None:
        if self.last_step == state.global_step:
            return
        self.last_step = state.global_step
        main = state.is_world_process_zero
        if not (main or self.everywhere):
            return
        was_training = model.training
        model.eval()
        metrics = self.evaluate(state.global_step, model)
        model.train(was_training)
        if not main:
            return
        self.history.append({"step": state.global_step, **metrics})
        # Trainer.log, not TRL's override: TRL's would also flush (and so reset) its own running metrics,
        # gathered from every process. Logging clears control.should_log: put it back, so that the
        # trainer's own log of this step happens, on every process alike.
        should_log = control.should_log
        Trainer.log(self.trainer, dict(metrics))
        control.should_log = should_log

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Evaluate the starting point (step 0)."""
        if self.trainer is None:
            raise RuntimeError("ExactEvaluationCallback logs through its trainer: add it with "
                               "callback.attach(trainer), not with callbacks=[...].")
        self._record(state, model, control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        """Evaluate every ``every`` optimizer steps and at the last one."""
        if (self.every and state.global_step % self.every == 0) or state.global_step >= state.max_steps:
            self._record(state, model, control)

    def on_train_end(self, args, state, control, **kwargs):
        """Refuse a run that made no optimizer step: its final figures would be the starting point's."""
        if state.global_step == 0:
            data = self.trainer.train_dataset
            rows = f"{len(data)} rows" if hasattr(data, "__len__") else "its rows"
            raise RuntimeError(
                f"TRL's trainer made 0 optimizer steps: its data loader gave no batch from {rows} "
                "(transformers: 'There seems not to be a single sample in your epoch_iterator'). The usual "
                f"cause is a batch larger than the data: {args.per_device_train_batch_size} per device x "
                f"{args.world_size} processes x {args.gradient_accumulation_steps} accumulation steps, and "
                "for GRPO generation_batch_size / num_generations distinct prompts sampled at once. Fix: "
                "when you add processes, lower per_device_train_batch_size so that the global batch "
                "(per-device batch x processes x accumulation) stays what one process had, and sample no "
                "more distinct prompts at once than the data hold (minirlhf.integrations.trl.dpo_args and "
                "grpo_args(config, processes) split the batch so).")
