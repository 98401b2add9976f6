"""Log-probabilities of responses under a causal LM, in the batch layout every stage shares.

Layout of a batch (B rows, T = P + R columns), used by SFT, the reward model, sampling
(:mod:`minirlhf.sampling`) and PPO (DPO packs the two answers of a pair into one row instead, see
:mod:`minirlhf.pairs`)::

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

import torch
import torch.nn.functional as F

from minirlhf.checks import shorten


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


def sequence_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Summed log-prob of each response, log pi(y | x) = sum_t log pi(y_t | x, y_<t). Shape (B,).

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``response_mask`` as made by
    :func:`encode_prompt_response` or :func:`~minirlhf.sampling.generate`. Prompt and padding are masked out.
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
