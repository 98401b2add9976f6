"""Saving and loading models as checkpoint folders: causal LMs, reward models, the shipped base model.

:func:`save_model` and :func:`load_model` for a causal LM (the tiny GPT or any Hugging Face one),
:func:`save_reward_model` and :func:`read_reward_model` for a :class:`minirlhf.reward.RewardModel`,
and :func:`load_base_model`, the SFT model that ships with the package. Every save is crash-safe
(:mod:`minirlhf.checkpoint_files`) and records the checkpoint's ``kind`` and its tokenizer's
fingerprint; every load checks the files first (:mod:`minirlhf.safe_loading`) and unpickles nothing.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from minirlhf.checkpoint_files import (
    CHECKPOINT_INFO,
    check_checkpoint_dir,
    read_checkpoint_info,
    save_atomically,
)
from minirlhf.checks import shorten
from minirlhf.files import read_json_file
from minirlhf.models import check_tokenizer_matches, stamp_tokenizer, tokenizer_fingerprint
from minirlhf.safe_loading import (
    auto_config,
    check_finite_weights,
    check_reads_the_world,
    check_weights_fit,
    reading_weights,
)

REWARD_MODEL_FILE = "reward_model.json"
"""The file that marks a reward model's checkpoint (see :meth:`minirlhf.reward.RewardModel.save`)."""


LOADERS = {"causal_lm": "minirlhf.saved_models.load_model(path)",
           "reward_model": "minirlhf.reward.load_reward_model(path)"}
"""The function that loads each kind of checkpoint."""


def checkpoint_info(kind: str, tokenizer=None) -> dict:
    """What a save records in :data:`~minirlhf.checkpoint_files.CHECKPOINT_INFO`: the checkpoint's ``kind``
    (a key of :data:`LOADERS`) and the fingerprint of the tokenizer saved with it (or None)."""
    return {"kind": kind, "tokenizer_sha256": None if tokenizer is None else tokenizer_fingerprint(tokenizer)}


def check_checkpoint_kind(path: Path, kind: str) -> dict:
    """Refuse a checkpoint of another ``kind`` than the caller loads (a reward model read as a causal
    LM would start from random weights). Returns the checkpoint's recorded info."""
    info = read_checkpoint_info(path)
    if info is None:  # a folder save_pretrained wrote: only a reward model's own file tells the kind
        info = {"kind": "reward_model" if (path / REWARD_MODEL_FILE).is_file() else "causal_lm"}
    found = info.get("kind")
    if found != kind:
        raise ValueError(f"{str(path)!r} holds a {found} checkpoint, not a {kind} (see its "
                         f"{CHECKPOINT_INFO}): load it with {LOADERS.get(found, 'the code that saved it')}.")
    return info


MAX_TOKENIZER_BYTES = 100_000_000
"""The largest ``tokenizer.json`` that loading reads."""


def load_tokenizer(path: Path, info: dict) -> PreTrainedTokenizerFast:
    """The tokenizer saved in checkpoint ``path`` (left padding), refused when its fingerprint differs
    from the one ``info`` recorded at save time: its words would not be the weights' words."""
    file = path / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"The checkpoint {str(path)!r} has no tokenizer.json: copy it from where the "
                                "checkpoint was saved, or save model and tokenizer again with save_model.")
    if file.stat().st_size > MAX_TOKENIZER_BYTES:
        raise ValueError(f"{file} is {file.stat().st_size:,} bytes, more than any tokenizer minirlhf saves "
                         f"({MAX_TOKENIZER_BYTES:,}): it is damaged or not one of minirlhf's. Copy the whole "
                         "checkpoint folder again, or save model and tokenizer again with save_model.")
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    except Exception as error:  # the tokenizers library raises its own kinds for a damaged file
        raise ValueError(f"{file} cannot be read as a tokenizer ({shorten(str(error), 200)}). Copy the "
                         "whole checkpoint folder again, or save model and tokenizer again with "
                         "save_model.") from error
    tokenizer.padding_side = "left"
    recorded, found = info.get("tokenizer_sha256"), tokenizer_fingerprint(tokenizer)
    if recorded and recorded != found:
        raise ValueError(
            f"The tokenizer in {file} (fingerprint {found[:12]}) is not the one the weights were saved "
            f"with (fingerprint {recorded[:12]}, recorded in {path / CHECKPOINT_INFO}): the model would "
            "read other words. Put back the tokenizer files saved with these weights, or save model and "
            "tokenizer again together with save_model.")
    return tokenizer


@contextlib.contextmanager
def no_transformers_progress_bars():
    """Silence transformers' per-file progress bars ("Loading weights", "Writing model shards")
    while loading or saving a 28-tensor model, where they are noise; restores the setting after."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_on_meta(build):
    """``build()`` with every tensor on PyTorch's "meta" device: shapes without memory."""
    with torch.device("meta"), no_transformers_progress_bars():
        return build()


def save_model(model, tokenizer, path: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Save model (safetensors) and tokenizer as the checkpoint folder ``path``, with ``extra_files``
    (name -> text) beside them; safe against interruptions and never deleting a file minirlhf did
    not write (see :func:`minirlhf.checkpoint_files.save_atomically`)."""
    check_tokenizer_matches(model, tokenizer)
    check_finite_weights(model, Path(path), saving=True)
    with no_transformers_progress_bars():
        return save_atomically([model, tokenizer], path, checkpoint_info("causal_lm", tokenizer), extra_files)


def load_model(path: str | Path, device=None) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """Load a causal LM and its tokenizer saved by :func:`save_model` (no pickle involved).

    Refuses a reward model's checkpoint, a damaged weights file, and a tokenizer that is not the
    one the weights were saved with.
    """
    path = check_checkpoint_dir(path)
    tokenizer = load_tokenizer(path, check_checkpoint_kind(path, "causal_lm"))
    weights = path / "model.safetensors"
    config = auto_config(path)
    check_weights_fit(build_on_meta(lambda: AutoModelForCausalLM.from_config(config)), weights)
    with no_transformers_progress_bars(), reading_weights(weights):
        model, loading = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True,
                                                              output_loading_info=True)
    if loading["missing_keys"]:  # from_pretrained would fill them with random numbers
        raise ValueError(f"{weights} lacks weights of the model "
                         f"({', '.join(sorted(loading['missing_keys'])[:3])}, ...): is it a causal LM "
                         "saved with save_model?")
    check_finite_weights(model, weights)
    check_tokenizer_matches(model, tokenizer)
    check_reads_the_world(model, tokenizer, str(path))
    stamp_tokenizer(model, tokenizer)
    if device is not None:
        model.to(device)
    return model, tokenizer


BASE_MODEL_DIR = Path(__file__).parent / "checkpoints" / "sft-tiny-gpt"


def load_base_model(path: str | Path | None = None, device=None):
    """Load the SFT base model (the shipped one unless ``path`` is given), in eval mode.

    Returns ``(model, tokenizer)``; this model is also the frozen reference pi_ref of PPO and DPO.
    """
    model, tokenizer = load_model(path or BASE_MODEL_DIR, device=device)
    return model.eval(), tokenizer


def write_reward_model_files(reward_model, path: str | Path) -> None:
    """Write a reward model's ``config.json`` (its backbone's), ``model.safetensors`` and
    ``reward_model.json`` (how it was built) into the folder ``path``."""
    path = Path(path)
    reward_model.backbone.config.save_pretrained(path)
    state = {k: v.detach().contiguous().cpu() for k, v in reward_model.state_dict().items()}
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    info = {"kind": "minirlhf.RewardModel", "freeze_backbone": reward_model.freeze_backbone,
            "attention_only": reward_model.attention_only}
    (path / REWARD_MODEL_FILE).write_text(json.dumps(info, indent=2))


def save_reward_model(reward_model, path: str | Path, tokenizer=None) -> Path:
    """Save a :class:`~minirlhf.reward.RewardModel` (and ``tokenizer``) as the checkpoint folder
    ``path``, as :func:`save_model` does."""
    objects = [reward_model] + ([tokenizer] if tokenizer is not None else [])
    if tokenizer is not None:
        check_tokenizer_matches(reward_model.backbone, tokenizer)
    check_finite_weights(reward_model, Path(path), saving=True)
    return save_atomically(objects, path, checkpoint_info("reward_model", tokenizer))


def read_reward_model(cls, path: str | Path, device=None):
    """Load the reward model (of class ``cls``) saved in ``path``, in eval mode, with its tokenizer as
    ``.tokenizer`` (None if none was saved). Refuses a causal LM's checkpoint."""
    path = check_checkpoint_dir(path)
    if not (path / REWARD_MODEL_FILE).is_file():
        raise ValueError(f"{str(path)!r} holds no reward model (no {REWARD_MODEL_FILE}). To start "
                         "one from a causal LM use RewardModel.from_base(load_model(path)[0]).")
    info = check_checkpoint_kind(path, "reward_model")
    options = read_json_file(path / REWARD_MODEL_FILE, fix="Copy the whole checkpoint folder again.")
    if not isinstance(options, dict) or not isinstance(options.get("freeze_backbone"), bool):
        raise ValueError(f"{path / REWARD_MODEL_FILE} is damaged (no freeze_backbone). Copy the whole "
                         "checkpoint folder again, or save the reward model again.")
    weights, config = path / "model.safetensors", auto_config(path)

    def build():
        return cls(AutoModel.from_config(config), freeze_backbone=options["freeze_backbone"],
                   attention_only=options.get("attention_only", False) is True)

    check_weights_fit(build_on_meta(build), weights)
    model = build()
    with reading_weights(weights):
        model.load_state_dict(load_file(weights))
    check_finite_weights(model, weights)
    if (path / "tokenizer.json").is_file():
        model.tokenizer = load_tokenizer(path, info)
        check_tokenizer_matches(model.backbone, model.tokenizer)
        stamp_tokenizer(model.backbone, model.tokenizer)
    if device is not None:
        model.to(device)
    return model.eval()
