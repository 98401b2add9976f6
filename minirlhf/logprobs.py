"""Log-probabilities of responses, and sampling: the batch layout and helpers every stage shares.

Layout of a batch (B rows, T = P + R columns), used by SFT, the reward model and PPO (DPO packs
the two answers of a pair into one row instead, see :func:`encode_pairs` at the end)::

    <pad> <pad> Q : What is ... ? A :  The capital of France is Paris . <eos> <pad> <pad>
    |---------- prompt, left-padded --|-- response + EOS, right-padded ------------------|

* ``attention_mask`` is 1 on real tokens (prompt, response, EOS) and 0 on padding.
* ``response_mask`` is 1 on response tokens and the EOS, 0 on prompt and padding: the log-prob
  of a response is the **sum** of the log-probs at these positions.
* GPT-2 has absolute position embeddings, so padding on the left would shift every position.
  We pass ``position_ids = attention_mask.cumsum(-1) - 1`` (clamped at 0): the first real
  token is at position 0 whatever the padding, and padding never changes a log-prob.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from minirlhf.tokenizer import decode
from minirlhf.utils import shorten


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: ``cumsum(mask) - 1``, clamped at 0. Shape (B, T)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def check_fits(model, length: int, what: str = "The sequence") -> None:
    """Refuse a sequence (``what``, e.g. the text) longer than the model's context, with the fix in
    the message."""
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ValueError(
            f"{what} is {length} tokens long but the model's context holds {limit}. "
            "Shorten the prompt, lower max_new_tokens, or build the model with more n_positions."
        )


def encode_texts(tokenizer, texts: list[str], what: str) -> list[list[int]]:
    """Token ids of each text; refuse empty prompts and words the tokenizer does not know.

    Each distinct text is tokenised (and checked) once: a batch repeats the same prompts many
    times (16 samples per prompt, say), and tokenising is a large part of a small model's step.
    """
    distinct = list(dict.fromkeys(texts))
    ids_of = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"]))
    for text, row in ids_of.items():
        if what == "prompt" and not row:
            raise ValueError("A prompt is empty. Give every example a non-empty prompt.")
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in row:
            raise ValueError(
                f"The {what} {shorten(text)} contains words the tokenizer does not know. Use the "
                "toy world's words (minirlhf.world.all_words()) or a tokenizer built for your data."
            )
    return [ids_of[text] for text in texts]


def encode_prompt_response(tokenizer, prompts: list[str], responses: list[str],
                           add_eos: bool = True, model=None) -> dict[str, torch.Tensor]:
    """Tokenise (prompt, response) pairs into the batch layout above.

    Returns ``input_ids``, ``attention_mask`` and ``response_mask``, each of shape (B, P + R),
    where P is the longest prompt and R the longest response (EOS included). With a ``model``,
    refuses a pair longer than its context, naming the text.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"Got {len(prompts)} prompts but {len(responses)} responses.")
    if not prompts:
        raise ValueError("The batch is empty: give at least one (prompt, response) pair.")
    prompt_ids = encode_texts(tokenizer, prompts, "prompt")
    response_ids = encode_texts(tokenizer, responses, "response")
    if add_eos:
        response_ids = [r + [tokenizer.eos_token_id] for r in response_ids]
    if model is not None:
        lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
        i = lengths.index(max(lengths))
        check_fits(model, lengths[i], f"The text {shorten(prompts[i] + ' ' + responses[i])}")
    P = max(len(p) for p in prompt_ids)
    R = max(len(r) for r in response_ids)
    pad = tokenizer.pad_token_id
    rows, attention, response_mask = [], [], []
    for p, r in zip(prompt_ids, response_ids):
        left, right = P - len(p), R - len(r)
        rows.append([pad] * left + p + r + [pad] * right)
        attention.append([0] * left + [1] * (len(p) + len(r)) + [0] * right)
        response_mask.append([0] * P + [1] * len(r) + [0] * right)
    return {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.tensor(attention),
        "response_mask": torch.tensor(response_mask),
    }


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   temperature: float = 1.0, return_entropy: bool = False):
    """Per-token log-probs ``out[b, t] = log p(input_ids[b, t] | input_ids[b, :t])``.

    Shapes: ``input_ids`` and ``attention_mask`` (B, T) -> ``out`` (B, T), with ``out[:, 0] = 0``
    (the first token has no context). Logits are divided by ``temperature``, the same one used to
    sample, so that PPO's ratios compare like with like. With ``return_entropy`` also returns the
    entropy of each next-token distribution, aligned the same way, shape (B, T).
    """
    check_fits(model, input_ids.shape[1])
    # use_cache=False: teacher forcing reads every position at once, so no KV cache to build
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits
    logits = logits[:, :-1].float() / temperature  # logits at t predict token t + 1
    logp = F.pad(gather_logprobs(logits, input_ids[:, 1:]), (1, 0))
    if not return_entropy:
        return logp
    probs = torch.softmax(logits, dim=-1)
    entropy = torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)  # H = logsumexp(z) - sum p z
    return logp, F.pad(entropy, (1, 0))


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[target]`` at each position: (B, T, V) and (B, T) -> (B, T).

    Computed as ``logit[target] - logsumexp(logits)``, which never builds the full log-softmax.
    Every log-prob in minirlhf (SFT, PPO, the reward model's data, DPO's packed pairs) goes through it.
    """
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of ``mask`` (B, T) -> (B,), for left or right padding:
    the last real token (an attention mask) or the last response token (a response mask).

    ``argmax`` of ``mask * [0, 1, ..., T-1]`` is the largest position whose mask is 1.
    """
    if mask.dim() != 2:
        raise ValueError(f"The mask must have shape (B, T), got {tuple(mask.shape)}.")
    if not mask.bool().any(-1).all():
        raise ValueError("A row of the mask has no token (all padding, or no response token): "
                         "every row needs one, and every response at least its EOS.")
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (mask.long() * positions).argmax(-1)


def close_cut_answers(input_ids: torch.Tensor, attention_mask: torch.Tensor, finished: torch.Tensor,
                      eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """End every answer cut at the length limit with EOS, as the texts a rater judges end: (B, T) ->
    (B, T + 1), for a batch of :func:`generate` (a cut answer runs to the last column). Rows that
    ended with EOS get one masked column (their scores do not change)."""
    cut = ~finished.to(input_ids.device)
    column = torch.full_like(input_ids[:, :1], eos_token_id)
    mask_column = cut[:, None].to(attention_mask.dtype)
    return torch.cat([input_ids, column], 1), torch.cat([attention_mask, mask_column], 1)


def sequence_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Summed log-prob of each response, log pi(y | x) = sum_t log pi(y_t | x, y_<t). Shape (B,).

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``response_mask`` as made by
    :func:`encode_prompt_response` or :func:`generate`. Prompt and padding are masked out.
    """
    logp = token_logprobs(model, batch["input_ids"], batch["attention_mask"], temperature)
    return (logp * batch["response_mask"]).sum(-1)


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Move every tensor of ``batch`` to ``device``."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def response_logprobs(model, tokenizer, prompts: list[str], responses: list[str],
                      batch_size: int = 256) -> torch.Tensor:
    """log pi(response | prompt) for each pair, summed over response tokens and EOS. Shape (B,).

    Runs in batches of ``batch_size`` without gradients; returns a CPU tensor.
    """
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        batch = encode_prompt_response(tokenizer, prompts[i:i + batch_size],
                                       responses[i:i + batch_size])
        out.append(sequence_logprobs(model, to_device(batch, device)).cpu())
    return torch.cat(out)


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


@torch.no_grad()
def token_log_ratios(policy, ref_model, tokenizer, prompt: str,
                     response: str) -> tuple[list[str], list[float]]:
    """Per-token ``log pi(y_t|x, y_<t) - log pi_ref(y_t|x, y_<t)`` of one response, EOS included.

    Returns ``(tokens, log_ratios)``, two lists of length R (the response's tokens). Their sum is
    ``log pi(y|x) - log pi_ref(y|x)``: PPO's sequence KL estimate for this sample, and DPO's
    implicit reward divided by beta. Shows *which* tokens a training run changed.
    """
    batch = encode_prompt_response(tokenizer, [prompt], [response])
    device = next(policy.parameters()).device
    ids, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    keep = batch["response_mask"][0].bool()
    delta = token_logprobs(policy, ids, attention) - token_logprobs(ref_model, ids, attention)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0][keep].tolist())
    return tokens, delta[0].cpu()[keep].tolist()


# --------------------------------------------------------------------------------------------
# Packed pairs: the prompt once, then both answers, in one row
# --------------------------------------------------------------------------------------------

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
