"""Helpers every training loop shares: seeding, threads, the learning-rate schedule, gradients.

SFT, the reward model, PPO, GRPO and DPO each write their own loop top to bottom; what they do
alike is here: :func:`seed_everything` and :func:`set_threads` before the loop,
:func:`lr_factor` and :func:`embedding_param_groups` for the optimiser, :func:`frozen_blocks` and
:func:`fused_gelu` around it, :func:`clip_grad_norm` and :func:`check_finite_loss` at each step.
"""

from __future__ import annotations

import contextlib
import math
import random

import torch
from torch import nn

from minirlhf.checks import check_seed


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python and torch, and return a CPU ``torch.Generator`` seeded with ``seed``.

    Pass the generator to sampling code so that the same seed gives the same numbers. A seed outside
    0 to 2**63 - 1 (what torch takes) is refused with a message (see :func:`~minirlhf.checks.check_seed`).
    """
    check_seed(seed, maximum=2**63 - 1)  # seeds derived in a run (seed + step) may pass 2**32 - 1
    random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


DEFAULT_THREADS = 1
"""CPU threads the ``minirlhf`` command computes with. The model is so small that a second thread
saves little on an idle machine, and beside other busy work threads that wait on each other lose
far more than a fair share of the CPU (``benchmarks/busy_laptop.py`` measures both)."""


def set_threads(n: int) -> None:
    """Let torch compute with ``n`` CPU threads (``torch.set_num_threads``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"The number of threads must be a whole number >= 1, got {n!r}.")
    torch.set_num_threads(n)


def lr_factor(step: int, total: int, warmup: int = 0, decay: str = "cosine") -> float:
    """The learning-rate multiplier at ``step`` (0-based), shared by every trainer::

        warm-up  (step + 1) / warmup                       for step < warmup
        decay    p = (step - warmup) / (total - warmup)    then 0.5 (1 + cos(pi p))  ("cosine"),
                                                           max(0, 1 - p)  ("linear"), or 1  ("constant")

    The warm-up reaches the full rate at step ``warmup - 1`` and never trains at rate 0.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if decay == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if decay == "linear":
        return max(0.0, 1 - progress)
    if decay == "constant":
        return 1.0
    raise ValueError(f"decay must be 'cosine', 'linear' or 'constant', got {decay!r}.")


def embedding_param_groups(model, learning_rate: float, embedding_lr_scale: float) -> list[dict]:
    """Two optimiser parameter groups for ``model``: its token-embedding matrix (GPT-2's output
    layer too: the matrix is tied) at ``learning_rate * embedding_lr_scale``, everything else at
    ``learning_rate``. Each group also keeps its multiplier as ``lr_scale``, for training loops
    that set the rate of every group by hand at each step.

    The embeddings' group comes first: GPT-2's embedding matrix is its first parameter, so the
    groups list the parameters in the model's own order, and a gradient norm taken over them
    (:func:`minirlhf.training.clip_grad_norm`) adds up in the same order as over ``model.parameters()``.
    """
    embeddings = model.get_input_embeddings().weight
    return [{"params": [embeddings], "lr": learning_rate * embedding_lr_scale,
             "lr_scale": embedding_lr_scale},
            {"params": [p for p in model.parameters() if p is not embeddings],
             "lr": learning_rate, "lr_scale": 1.0}]


def transformer_blocks(model) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM: GPT-2's ``transformer.h`` (or ``layers``,
    as Llama-style models name it)."""
    base = model.base_model
    for name in ("h", "layers"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"Cannot find the transformer blocks of a {type(model).__name__}: expected a "
                     "GPT-2-style model (base_model.h) or one with base_model.layers.")


@contextlib.contextmanager
def frozen_blocks(model, n_blocks: int):
    """Keep the first ``n_blocks`` transformer blocks of ``model`` as they are while training:
    their parameters get no gradient (``requires_grad`` off, so no optimiser moves them and the
    gradient norm leaves them out). On exit every parameter gets back its ``requires_grad``."""
    if n_blocks == 0:
        yield
        return
    blocks = transformer_blocks(model)
    if not 0 < n_blocks <= len(blocks):
        raise ValueError(f"frozen_blocks must be between 0 and the model's {len(blocks)} blocks, "
                         f"got {n_blocks}.")
    params = [p for block in blocks[:n_blocks] for p in block.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


@contextlib.contextmanager
def fused_gelu(*models):
    """Run GPT-2's ``gelu_new`` activation as PyTorch's one-kernel ``GELU(approximate="tanh")``.

    It is the same function (log-probs agree to about 1e-6), computed in one operation instead of
    seven. The original
    modules are put back on exit, so the models leave as they came. ``None`` entries are skipped.
    """
    swapped = [(parent, name, child) for model in models if model is not None
               for parent in model.modules() for name, child in parent.named_children()
               if type(child).__name__ == "NewGELUActivation"]
    for parent, name, _ in swapped:
        setattr(parent, name, nn.GELU(approximate="tanh"))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def clip_grad_norm(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients of every parameter ``optimizer`` updates to a total norm of at most
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_``). Returns the norm before clipping.

    Why the optimizer's parameters, not ``model.parameters()``: its groups are lists made once,
    while ``model.parameters()`` walks every module again at each call.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def check_finite_loss(loss: torch.Tensor, step: int) -> None:
    """Stop training with a clear message when the loss is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"The loss became {loss.item()} at step {step}. Lower the learning rate, or check the "
            "data for empty responses; the model saved before this step is unchanged."
        )
