"""DPO's packed pairs: the prompt once, then both answers, in one row, scored in one forward pass.

:func:`encode_pairs` packs each preference pair into one row, :func:`pair_attention_mask` keeps the
rejected answer from seeing the chosen one, and :func:`pair_logps` returns both answers' summed
log-probs, exactly those of two separate (prompt, answer) rows of :mod:`minirlhf.logprobs`.
"""

from __future__ import annotations

import torch

from minirlhf.logprobs import check_fits, encode_texts, gather_logprobs, to_device

PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, -1
"""The ``segment`` of each token of a packed pair (see :func:`encode_pairs`)."""


def encode_pairs(tokenizer, data) -> dict[str, torch.Tensor]:
    """Tokenise every pair once, as ONE row: the prompt, the chosen answer, the rejected answer.

    Both answers of a pair share their prompt, so the prompt goes through the model once::

        tokens    Q : What ... ? A : | The capital ... Paris . <eos> | The ... Berlin . <eos> | <pad>
        segment   PROMPT             | CHOSEN                        | REJECTED               | PADDING
        position  0 ... P-1          | P ... P+C-1                   | P ... P+R-1            | 0

    Returns four tensors of shape (N, T), one row per pair, padded on the right:

    * ``input_ids``; ``segment``: which part each token belongs to (the constants above);
    * ``position_ids``: the rejected answer's positions restart after the prompt, as if the chosen
      answer were not there; :func:`pair_attention_mask` hides the chosen answer from it too. So each
      answer's log-probs are exactly those of its own (prompt, answer) sequence (the tests check it);
    * ``predicted_from``: the column whose logits predict each token. That is ``t - 1``, except for
      the first rejected token, which follows the last prompt token.

    On the toy world a batch of pairs is 32 tokens wide this way, against two padded rows of 24
    tokens per pair: a third fewer tokens go through the forward and backward passes.
    """
    prompts = encode_texts(tokenizer, list(data["prompt"]), "prompt")
    eos = [tokenizer.eos_token_id]  # each answer ends with EOS, as in every other stage
    chosen = [ids + eos for ids in encode_texts(tokenizer, list(data["chosen"]), "response")]
    rejected = [ids + eos for ids in encode_texts(tokenizer, list(data["rejected"]), "response")]
    width = max(len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected))
    rows = {"input_ids": [], "position_ids": [], "segment": [], "predicted_from": []}
    for p, c, r in zip(prompts, chosen, rejected):
        pad = width - len(p) - len(c) - len(r)
        first_rejected = len(p) + len(c)
        predicted_from = [0] + list(range(width - 1))  # token t is predicted by the logits at t - 1 ...
        predicted_from[first_rejected] = len(p) - 1    # ... but the rejected answer follows the prompt
        rows["input_ids"].append(p + c + r + [tokenizer.pad_token_id] * pad)
        rejected_positions = list(range(len(p), len(p) + len(r)))  # restart after the prompt
        rows["position_ids"].append(list(range(first_rejected)) + rejected_positions + [0] * pad)
        rows["segment"].append([PROMPT] * len(p) + [CHOSEN] * len(c) + [REJECTED] * len(r) + [PADDING] * pad)
        rows["predicted_from"].append(predicted_from)
    return {name: torch.tensor(values) for name, values in rows.items()}


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the columns on the right that are padding in every row: same log-probs, less work."""
    width = int((batch["segment"] != PADDING).sum(-1).max())
    return {name: values[:, :width] for name, values in batch.items()}


def pair_attention_mask(segment: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Who attends to whom in packed pairs: ``segment`` (B, T) -> additive mask (B, 1, T, T).

    Query ``t`` sees key ``s`` when ``s <= t`` (causal) and ``s`` is in the prompt or in ``t``'s own
    segment: the rejected answer never sees the chosen one. (Padding sees the prompt and padding;
    its outputs are never used.) The mask is 0 where visible and the most negative number of
    ``dtype`` elsewhere: the form that both eager and SDPA attention add to their scores.
    """
    query, key = segment.unsqueeze(-1), segment.unsqueeze(-2)  # (B, T, 1) and (B, 1, T)
    width = segment.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment.device).tril()
    visible = causal & ((key == PROMPT) | (key == query))  # (B, T, T)
    mask = torch.zeros(visible.shape, dtype=dtype, device=segment.device)
    return mask.masked_fill(~visible, torch.finfo(dtype).min).unsqueeze(1)


def _check_custom_masks(model) -> None:
    """Packed pairs need an attention that takes a custom 4D mask (flash-attention kernels do not)."""
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    if attention not in ("eager", "sdpa"):
        raise ValueError(f"Packed pairs (DPO) put each pair in one row with its own attention mask, which "
                         f"the {attention!r} attention cannot take. Load the model with "
                         "attn_implementation='sdpa' (or 'eager').")


def pair_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected answers, from ONE forward pass.

    ``batch``: B rows of :func:`encode_pairs`. Returns ``(chosen_logps, rejected_logps)``, each of
    shape (B,): ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` over the answer's tokens and EOS.
    """
    _check_custom_masks(model)
    batch = trim_padding(batch)
    check_fits(model, int(batch["position_ids"].max()) + 1)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=pair_attention_mask(batch["segment"], model.dtype),
                   use_cache=False).logits.float()  # (B, T, V)
    # for each token, the logits that predict it: those of the token before it in its own answer
    logits = logits.gather(1, batch["predicted_from"].unsqueeze(-1).expand_as(logits))
    logp = gather_logprobs(logits, batch["input_ids"])  # log pi(token_t | its context), (B, T)
    segment = batch["segment"]
    return (logp * (segment == CHOSEN)).sum(-1), (logp * (segment == REJECTED)).sum(-1)


@torch.no_grad()
def reference_logps(ref_model, encoded: dict[str, torch.Tensor],
                    batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi_ref of the chosen and of the rejected answer of every pair of ``encoded``, once,
    without gradients. Returns ``(ref_chosen, ref_rejected)``, each of shape (N,).

    The reference never changes, so there is no reason to run it at every step."""
    device = next(ref_model.parameters()).device
    n = encoded["input_ids"].shape[0]
    chunks = [pair_logps(ref_model, to_device({k: v[i:i + batch_size] for k, v in encoded.items()}, device))
              for i in range(0, n, batch_size)]
    return torch.cat([chosen for chosen, _ in chunks]), torch.cat([rejected for _, rejected in chunks])
