"""Sampling answers from a causal LM, token by token with a KV cache, in the shared batch layout.

:func:`generate` returns the layout of :mod:`minirlhf.logprobs` (left-padded prompts, positions
from the attention mask), so its output goes straight into the log-prob helpers;
:func:`close_cut_answers` ends with EOS the answers that the length limit cut.
"""

from __future__ import annotations

import inspect

import torch

from minirlhf.logprobs import check_fits, encode_prompt_response, position_ids_from_mask
from minirlhf.tokenizer import decode


def _cache_argument(model) -> str:
    """Name of the KV-cache argument and output: ``cache`` in recent transformers (>= 5.x),
    ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 16,
             temperature: float = 1.0, generator: torch.Generator | None = None) -> dict:
    """Sample one response per prompt, token by token, until EOS or ``max_new_tokens``.

    Prompts are left-padded (positions from the attention mask, see above). After a row emits
    EOS it is padded. Returns the batch layout of this module, plus ``responses`` (decoded text)
    and ``finished`` (a (B,) bool tensor, True where the response ended with EOS).
    ``generator`` (a CPU ``torch.Generator``) makes sampling repeatable.
    """
    if not prompts:
        raise ValueError("No prompts to generate from: give at least one.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    device = next(model.parameters()).device
    batch = encode_prompt_response(tokenizer, prompts, [""] * len(prompts), add_eos=False)
    check_fits(model, batch["input_ids"].shape[1] + max_new_tokens)
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    B = input_ids.shape[0]
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    new_tokens, new_mask = [], []
    # KV cache: the first pass reads the whole prompt, later passes only the newest token
    cache_name = _cache_argument(model)
    cache, step_ids = None, input_ids
    for _ in range(max_new_tokens):
        mask = torch.cat([attention_mask] + new_mask, dim=1)
        positions = position_ids_from_mask(mask)[:, -step_ids.shape[1]:]
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                    use_cache=True, **{cache_name: cache})
        cache = out[cache_name]
        logits = out.logits[:, -1].float()
        probs = torch.softmax(logits / temperature, dim=-1)
        if not torch.isfinite(probs).all():
            raise FloatingPointError(
                "The model's next-token probabilities are NaN or infinite: its weights have diverged in "
                "training. Lower the learning rate and train again.")
        token = torch.multinomial(probs.cpu(), 1, generator=generator).to(device).squeeze(-1)
        token = torch.where(finished, torch.full_like(token, tokenizer.pad_token_id), token)
        new_tokens.append(token[:, None])
        new_mask.append((~finished).long()[:, None])  # EOS itself is a real token
        finished |= token == tokenizer.eos_token_id
        step_ids = token[:, None]
        if finished.all():
            break
    response_ids = torch.cat(new_tokens, dim=1)
    response_mask = torch.cat(new_mask, dim=1)
    return {
        "input_ids": torch.cat([input_ids, response_ids], dim=1),
        "attention_mask": torch.cat([attention_mask, response_mask], dim=1),
        "response_mask": torch.cat([torch.zeros_like(attention_mask), response_mask], dim=1),
        "responses": [decode(tokenizer, row) for row in response_ids.tolist()],
        "finished": finished.cpu(),
    }


def close_cut_answers(input_ids: torch.Tensor, attention_mask: torch.Tensor, finished: torch.Tensor,
                      eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """End every answer cut at the length limit with EOS, as the texts a rater judges end: (B, T) ->
    (B, T + 1), for a batch of :func:`generate` (a cut answer runs to the last column). Rows that
    ended with EOS get one masked column (their scores do not change)."""
    cut = ~finished.to(input_ids.device)
    column = torch.full_like(input_ids[:, :1], eos_token_id)
    mask_column = cut[:, None].to(attention_mask.dtype)
    return torch.cat([input_ids, column], 1), torch.cat([attention_mask, mask_column], 1)
