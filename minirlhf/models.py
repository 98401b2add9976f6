"""The tiny GPT: a GPT-2 built from a local config, and the tokenizer its weights read.

The same training code runs on this 2-layer model on a laptop CPU and on a real checkpoint on
a GPU: every algorithm in minirlhf only needs a causal LM with the Hugging Face interface. A model
remembers which tokenizer it reads (:func:`stamp_tokenizer`), so that a tokenizer with its words at
other ids is refused (:func:`check_tokenizer_matches`). Saving and loading it:
:mod:`minirlhf.saved_models`.
"""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from minirlhf.tokenizer import build_tokenizer


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


TOKENIZER_STAMP = "minirlhf_tokenizer_sha256"
"""The attribute of a model's config that holds the fingerprint of the tokenizer its weights read
(set by :func:`build_tiny_gpt` and :func:`~minirlhf.saved_models.load_model`, saved in ``config.json``)."""


def stamp_tokenizer(model, tokenizer) -> None:
    """Record in ``model.config`` which tokenizer its weights read (see :data:`TOKENIZER_STAMP`)."""
    setattr(model.config, TOKENIZER_STAMP, tokenizer_fingerprint(tokenizer))


def tokenizer_fingerprint(tokenizer) -> str:
    """The sha256 of ``tokenizer``'s sorted vocabulary and special ids: two tokenizers with the same
    fingerprint turn every text into the same ids."""
    special = [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]
    text = json.dumps([sorted(tokenizer.get_vocab().items()), special])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
