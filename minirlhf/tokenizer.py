"""A word-level tokenizer for the toy world, built locally with Hugging Face ``tokenizers``.

Every word and punctuation mark of the world is one token, so a student can read token ids
as words. The tokenizer is wrapped as a :class:`transformers.PreTrainedTokenizerFast`, so it
saves and loads with ``save_pretrained`` / ``from_pretrained`` like any hub tokenizer.

PAD and EOS are *separate* tokens: if they were the same, masking the padding would also
mask the EOS that ends each response, and the model would never learn to stop.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from minirlhf import world

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Build the word-level tokenizer (ids 0, 1, 2 are PAD, EOS, UNK; then ``words``).

    ``words`` defaults to :func:`minirlhf.world.all_words`. Text is split on whitespace and
    punctuation, so ``"Paris."`` is two tokens, ``Paris`` and ``.``; decoding puts the spaces
    back in front of punctuation and then cleans them up.
    """
    words = world.all_words() if words is None else words
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # split on whitespace and punctuation, one mark per token: "Paris..." is Paris . . .
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                  pre_tokenizers.Punctuation("isolated")])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=True,  # "Paris ." -> "Paris."
        model_max_length=64,
    )
    tokenizer.padding_side = "left"  # prompts are left-padded for generation
    return tokenizer


def decode(tokenizer: PreTrainedTokenizerFast, token_ids) -> str:
    """Decode ``token_ids`` to text, dropping PAD/EOS and normalising spaces before punctuation."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    return world.normalise_text(text)
