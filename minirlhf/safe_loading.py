"""Checks that make loading an untrusted checkpoint safe: its sizes, its weights' header, its numbers.

What a checkpoint may ask for is checked before any memory is allocated: the sizes in its config
against generous limits (:data:`SIZE_LIMITS`), then every tensor in its weights file's header
against the model that the config describes, built without memory (on PyTorch's "meta" device).
After loading, its weights must be finite numbers and must read the toy world's words with the
tokenizer saved beside them. :mod:`minirlhf.saved_models` runs these checks.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig

from minirlhf import world
from minirlhf.checks import shorten
from minirlhf.files import read_json_file
from minirlhf.logprobs import encode_prompt_response, response_logprobs

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


def auto_config(path: Path):
    """The transformers config of checkpoint ``path``, after :func:`read_model_config` checked its sizes."""
    read_model_config(path)
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path / 'config.json'} is not a config transformers can read "
                         f"({shorten(str(error), 200)}). Copy the whole checkpoint folder again, or save the "
                         "model again.") from error


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


@contextlib.contextmanager
def reading_weights(file: Path):
    """Turn the error of a damaged weights ``file`` (cut short, not safetensors) into one that names it."""
    try:
        yield
    except SafetensorError as error:
        raise ValueError(f"Cannot read the weights in {file} ({error}): the file is damaged, e.g. a "
                         "copy cut short. Copy the whole checkpoint folder again, or save the model again."
                         ) from error


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
