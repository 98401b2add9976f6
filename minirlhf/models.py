"""The tiny GPT: a GPT-2 built from a local ``GPT2Config``, and loading with clear errors.

The same training code runs on this 2-layer model on a laptop CPU and on a real checkpoint on
a GPU: every algorithm in minirlhf only needs a causal LM with the Hugging Face interface.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from minirlhf import world
from minirlhf.logprobs import encode_prompt_response, response_logprobs
from minirlhf.tokenizer import build_tokenizer
from minirlhf.utils import (
    CHECKPOINT_INFO,
    check_checkpoint_dir,
    no_transformers_progress_bars,
    read_checkpoint_info,
    read_json_file,
    save_atomically,
    shorten,
)


def tiny_gpt_config(tokenizer: PreTrainedTokenizerFast, n_layer: int = 2, n_embd: int = 64,
                    n_head: int = 4, n_positions: int = 64, dropout: float = 0.0) -> GPT2Config:
    """A GPT-2 config sized for the toy world (about 110k parameters with the defaults).

    Dropout defaults to 0: the corpus is tiny and clean, and RL needs a deterministic policy.
    """
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_gpt(tokenizer: PreTrainedTokenizerFast | None = None, seed: int = 0,
                   **config_kwargs) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """A randomly initialised tiny GPT and its tokenizer. ``config_kwargs`` go to
    :func:`tiny_gpt_config`."""
    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_gpt_config(tokenizer, **config_kwargs))
    stamp_tokenizer(model, tokenizer)
    return model, tokenizer


def check_tokenizer_matches(model, tokenizer) -> None:
    """Raise ValueError if ``tokenizer`` cannot drive ``model``: more tokens than the model's embedding,
    other special ids, or (for a model that knows it, see :func:`stamp_tokenizer`) not the tokenizer
    the model was built or loaded with, even one of the same size with its words at other ids."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding has only {vocab}: "
            "they do not belong together. Load the tokenizer saved with this model."
        )
    stamp = getattr(model.config, TOKENIZER_STAMP, None)
    if stamp is not None and stamp != tokenizer_fingerprint(tokenizer):
        raise ValueError(
            f"This tokenizer (fingerprint {tokenizer_fingerprint(tokenizer)[:12]}) is not the one the model "
            f"was built or loaded with (fingerprint {str(stamp)[:12]}): even with as many tokens, its words "
            "sit at other ids, and the model would read other words. Use the tokenizer saved with this "
            "model (load_model returns it), or minirlhf.tokenizer.build_tokenizer() for a model built by "
            "build_tiny_gpt.")
    pad = model.config.pad_token_id
    if pad is not None and pad != tokenizer.pad_token_id:
        raise ValueError(
            f"The model's pad_token_id is {pad} but the tokenizer's is {tokenizer.pad_token_id}. "
            "Load the tokenizer saved with this model."
        )


def check_reward_model(reward_model, tokenizer) -> None:
    """Refuse a reward model that reads token ids differently from the policy's ``tokenizer``.

    PPO hands the policy's token ids straight to the reward model, so both must share one
    vocabulary (same words at the same ids, same PAD and EOS).
    """
    if not callable(reward_model):
        raise TypeError("reward_model must be a module whose forward(input_ids, attention_mask) "
                        "returns one score per row (a minirlhf.reward.RewardModel), or None.")
    own = getattr(reward_model, "tokenizer", None)
    if own is not None:
        same = (own.get_vocab() == tokenizer.get_vocab() and own.pad_token_id == tokenizer.pad_token_id
                and own.eos_token_id == tokenizer.eos_token_id)
        if not same:
            raise ValueError("The reward model's tokenizer differs from the policy's (vocabulary or "
                             "PAD/EOS ids): its scores would read other words. Train the reward model "
                             "with the policy's tokenizer (minirlhf.tokenizer.build_tokenizer()).")
        return
    backbone = getattr(reward_model, "backbone", reward_model)
    embeddings = backbone.get_input_embeddings() if hasattr(backbone, "get_input_embeddings") else None
    if embeddings is not None and embeddings.num_embeddings != len(tokenizer):
        raise ValueError(f"The reward model's embedding has {embeddings.num_embeddings} tokens but the "
                         f"tokenizer has {len(tokenizer)}: they do not belong together. Train the "
                         "reward model with the policy's tokenizer.")


# ---------------------------------------------------------------------------------------------
# Saving and loading: what a checkpoint is, and which tokenizer its weights were trained with
# ---------------------------------------------------------------------------------------------

REWARD_MODEL_FILE = "reward_model.json"
"""The file that marks a reward model's checkpoint (see :meth:`minirlhf.reward.RewardModel.save`)."""

LOADERS = {"causal_lm": "minirlhf.models.load_model(path)",
           "reward_model": "minirlhf.reward.load_reward_model(path)"}
"""The function that loads each kind of checkpoint."""


TOKENIZER_STAMP = "minirlhf_tokenizer_sha256"
"""The attribute of a model's config that holds the fingerprint of the tokenizer its weights read
(set by :func:`build_tiny_gpt` and :func:`load_model`, saved in ``config.json``)."""


def stamp_tokenizer(model, tokenizer) -> None:
    """Record in ``model.config`` which tokenizer its weights read (see :data:`TOKENIZER_STAMP`)."""
    setattr(model.config, TOKENIZER_STAMP, tokenizer_fingerprint(tokenizer))


def tokenizer_fingerprint(tokenizer) -> str:
    """The sha256 of ``tokenizer``'s sorted vocabulary and special ids: two tokenizers with the same
    fingerprint turn every text into the same ids."""
    special = [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]
    text = json.dumps([sorted(tokenizer.get_vocab().items()), special])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_info(kind: str, tokenizer=None) -> dict:
    """What a save records in :data:`~minirlhf.utils.CHECKPOINT_INFO`: the checkpoint's ``kind``
    (a key of :data:`LOADERS`) and the fingerprint of the tokenizer saved with it (or None)."""
    return {"kind": kind, "tokenizer_sha256": None if tokenizer is None else tokenizer_fingerprint(tokenizer)}


def check_checkpoint_kind(path: Path, kind: str) -> dict:
    """Refuse a checkpoint of another ``kind`` than the caller loads (a reward model read as a causal
    LM would start from random weights). Returns the checkpoint's recorded info."""
    info = read_checkpoint_info(path)
    if info is None:  # saved before minirlhf recorded it: only a reward model's own file tells the kind
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


# What a checkpoint may ask for is checked before any memory is allocated: the sizes in its config
# against generous limits, then every tensor in its weights file's header against the model that the
# config describes, built without memory (on PyTorch's "meta" device).

SIZE_LIMITS = {"n_layer": 128, "num_hidden_layers": 128, "n_head": 256, "num_attention_heads": 256,
               "n_embd": 16_384, "hidden_size": 16_384, "n_inner": 65_536, "intermediate_size": 65_536,
               "n_positions": 131_072, "max_position_embeddings": 131_072, "vocab_size": 1_000_000}
"""The largest value of each size in a checkpoint's ``config.json`` that loading accepts."""
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
"""The safetensors dtypes a model's weights may have, and their sizes in bytes."""
MAX_HEADER_BYTES = 100_000_000
"""The largest safetensors header (the JSON table of contents of a weights file) that loading reads."""
DAMAGED = ("the file is damaged, e.g. a copy cut short. Copy the whole checkpoint folder again, or save the "
           "model again.")
REFIT = ("It is not the checkpoint its config.json describes: copy the whole checkpoint folder again, or "
         "save the model again with save_model.")


def read_model_config(path: Path) -> dict:
    """The checkpoint ``path``'s ``config.json`` as a dict, refused (naming the file, the size and the
    limit) when a size in it lies outside :data:`SIZE_LIMITS`: a config decides how much memory a
    model takes, so an untrusted one is checked before anything is allocated."""
    file = path / "config.json"
    config = read_json_file(file, fix="Copy the whole checkpoint folder again, or save the model again.")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ValueError(f"{file} is not a model's config (a JSON object with a model_type). Copy the whole "
                         "checkpoint folder again, or save the model again.")
    for key, limit in SIZE_LIMITS.items():
        value = config.get(key)
        if key not in config or (value is None and key in ("n_inner", "intermediate_size")):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"{file} asks for {key} = {shorten(value)}, outside the 1 to {limit:,} minirlhf "
                             "loads (checked before any memory is allocated): the file is damaged or not "
                             "a model minirlhf can use. Copy the whole checkpoint folder again, or save the "
                             "model again with save_model.")
    return config


def read_weights_header(file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (dtype, shape)}`` of a safetensors ``file``, read from its header alone, refused
    when the header is damaged, does not match the file's size, or holds a tensor that is not
    floating point (int8, bool, ...: not weights minirlhf trains)."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        start = handle.read(8)
        length = int.from_bytes(start, "little") if len(start) == 8 else -1
        if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
            raise ValueError(f"Cannot read the weights in {file} (no valid header): {DAMAGED}")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"Cannot read the weights in {file} (its header is not JSON): "
                             f"{DAMAGED}") from error
    if not isinstance(header, dict):
        raise ValueError(f"Cannot read the weights in {file} (its header is not a table): {DAMAGED}")
    tensors, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (first, last) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            ok = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (*shape, first, last))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"Cannot read the weights in {file} (the entry of {shorten(name)} is damaged): "
                             f"{DAMAGED}")
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"{file} holds {shorten(name)} as {shorten(dtype)}, not floating-point numbers "
                             f"({', '.join(FLOAT_DTYPES)}): it is not a model's weights as minirlhf saves "
                             "them (quantised or edited?). Save the model again with save_model from "
                             "float32 weights.")
        if last - first != math.prod(shape) * FLOAT_DTYPES[dtype]:
            raise ValueError(f"Cannot read the weights in {file} ({shorten(name)}'s bytes do not match its "
                             f"shape): {DAMAGED}")
        tensors[name], end = (dtype, shape), max(end, last)
    if 8 + length + end != size:
        raise ValueError(f"Cannot read the weights in {file} (it is {size:,} bytes, its header says "
                         f"{8 + length + end:,}): {DAMAGED}")
    return tensors


OLD_BUFFERS = (".attn.bias", ".attn.masked_bias")
"""Tensors that checkpoints of older transformers versions hold and today's GPT-2 no longer has."""


def check_weights_fit(model, file: Path) -> None:
    """Refuse a weights ``file`` whose tensors are not exactly those of ``model`` (built on the meta
    device from the checkpoint's config, so without memory): a missing or extra tensor, another
    shape, or a dtype that is not floating point. Tied weights (GPT-2's output layer) may be absent."""
    tensors = read_weights_header(file)
    first, tied = {}, set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            tied.add(name)
        first.setdefault(id(parameter), name)
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors) - tied)
    extra = sorted(n for n in set(tensors) - set(expected) if not n.endswith(OLD_BUFFERS))
    wrong = sorted(n for n in set(tensors) & set(expected) if tensors[n][1] != expected[n])
    if missing:
        raise ValueError(f"{file} lacks weights of the model ({', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''}). {REFIT}")
    if extra:
        raise ValueError(f"{file} holds tensors the model does not have ({', '.join(map(shorten, extra[:3]))}"
                         f"{', ...' if len(extra) > 3 else ''}). {REFIT}")
    if wrong:
        name = wrong[0]
        raise ValueError(f"{file} holds {name} of shape {list(tensors[name][1])}, but its config makes it "
                         f"{list(expected[name])}. {REFIT}")


def check_finite_weights(model, where: Path, saving: bool = False) -> None:
    """Refuse a model whose weights hold NaN or infinite numbers (a run that diverged), when loading it
    from ``where`` or, with ``saving``, before saving it there (so that it replaces no good checkpoint)."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            if saving:
                raise ValueError(f"The model holds NaN or infinite numbers (in {name}): its training "
                                 f"diverged, so it is not saved to {where} (anything there stays as it "
                                 "was). Train again with a lower learning rate.")
            raise ValueError(f"{where} holds NaN or infinite numbers (in {name}): the training that made "
                             "it diverged. Use an earlier checkpoint, or train again with a lower learning "
                             "rate.")


def check_reads_the_world(model, tokenizer, where: str) -> None:
    """Refuse a causal LM that reads the toy world's answers far worse than random guessing with
    ``tokenizer``: its weights learned other ids for these words (a tokenizer whose words were
    shuffled, even one of the same size). A model that never learned the world (random weights)
    reads them about as well as guessing, and passes. Skipped for a tokenizer without the world's words."""
    vocab = tokenizer.get_vocab()
    if not all(word in vocab for word in world.all_words()):
        return
    countries = [country for country, _ in world.COUNTRIES[:6]]  # 12 answers, 2-3 words each
    prompts = [world.make_prompt(c) for c in countries] * 2
    answers = [world.make_response(c, style) for style in ("correct", "hedge") for c in countries]
    n_tokens = encode_prompt_response(tokenizer, prompts, answers)["response_mask"].sum().item()
    per_token = response_logprobs(model, tokenizer, prompts, answers).sum().item() / n_tokens
    guessing = -math.log(len(tokenizer))
    if not per_token > guessing - 2:  # 2 nats: e^2 ~ 7 times less likely than a guess, at every token
        raise ValueError(
            f"The model in {where} reads the world's answers far worse than random guessing with its "
            f"tokenizer (mean log-prob per token {per_token:.1f}, guessing {guessing:.1f}): the tokenizer's "
            "words sit at other ids than the weights learned (a permuted tokenizer.json?). Put back the "
            "tokenizer saved with these weights, or save model and tokenizer again together with save_model.")


def build_on_meta(build):
    """``build()`` with every tensor on PyTorch's "meta" device: shapes without memory."""
    with torch.device("meta"), no_transformers_progress_bars():
        return build()


@contextlib.contextmanager
def reading_weights(file: Path):
    """Turn the error of a damaged weights ``file`` (cut short, not safetensors) into one that names it."""
    try:
        yield
    except SafetensorError as error:
        raise ValueError(f"Cannot read the weights in {file} ({error}): the file is damaged, e.g. a "
                         "copy cut short. Copy the whole checkpoint folder again, or save the model again."
                         ) from error


def save_model(model, tokenizer, path: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Save model (safetensors) and tokenizer as the checkpoint folder ``path``, with ``extra_files``
    (name -> text) beside them; safe against interruptions and never deleting a file minirlhf did
    not write (see :func:`minirlhf.utils.save_atomically`)."""
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


def auto_config(path: Path):
    """The transformers config of checkpoint ``path``, after :func:`read_model_config` checked its sizes."""
    read_model_config(path)
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path / 'config.json'} is not a config transformers can read "
                         f"({shorten(str(error), 200)}). Copy the whole checkpoint folder again, or save the "
                         "model again.") from error


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


# The base model that later stages start from. It ships with the package (about 0.5 MB) so that
# notebooks never wait for SFT; `minirlhf sft --out <folder>` trains it again with the same defaults.
BASE_MODEL_DIR = Path(__file__).parent / "checkpoints" / "sft-tiny-gpt"


def load_base_model(path: str | Path | None = None, device=None):
    """Load the SFT base model (the shipped one unless ``path`` is given), in eval mode.

    Returns ``(model, tokenizer)``; this model is also the frozen reference pi_ref of PPO and DPO.
    """
    model, tokenizer = load_model(path or BASE_MODEL_DIR, device=device)
    return model.eval(), tokenizer


def embedding_param_groups(model, learning_rate: float, embedding_lr_scale: float) -> list[dict]:
    """Two optimiser parameter groups for ``model``: its token-embedding matrix (GPT-2's output
    layer too: the matrix is tied) at ``learning_rate * embedding_lr_scale``, everything else at
    ``learning_rate``. Each group also keeps its multiplier as ``lr_scale``, for training loops
    that set the rate of every group by hand at each step.

    The embeddings' group comes first: GPT-2's embedding matrix is its first parameter, so the
    groups list the parameters in the model's own order, and a gradient norm taken over them
    (:func:`minirlhf.utils.clip_grad_norm`) adds up in the same order as over ``model.parameters()``.
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
