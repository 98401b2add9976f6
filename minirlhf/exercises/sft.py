"""Exercise 1: the SFT loss, with the prompt and the padding masked out.

The student writes ``sft_loss(logprobs, response_mask)``, the mean negative log-likelihood over
response tokens (see :func:`minirlhf.sft.sft_loss`)::

    L_SFT = - sum_{b,t} m[b,t] * logprobs[b,t] / sum_{b,t} m[b,t]
"""

from __future__ import annotations

import torch

from minirlhf.exercises.checking import (
    Case,
    Exercise,
    Mistake,
    random_layout,
    random_logprobs,
    run_check,
    shifted,
    without_eos,
)
from minirlhf.sft import sft_loss


def _cases() -> list[Case]:
    # Log-probs at prompt and padding positions are deliberately large and negative: a loss
    # that lets them in moves far from the right value, so the case shows the slip plainly.
    cases = [
        Case("one response, no prompt, no padding",
             "the loss is minus the average log-prob of the response tokens",
             {"logprobs": torch.tensor([[-1.0, -2.0, -3.0]]),
              "response_mask": torch.tensor([[1, 1, 1]])}),
        Case("prompt tokens present",
             "the prompt's log-probs do not count: the model is given the prompt, it does not write it",
             {"logprobs": torch.tensor([[-8.0, -9.0, -1.0, -3.0]]),
              "response_mask": torch.tensor([[0, 0, 1, 1]])}),
        Case("padding after a shorter response",
             "padding positions do not count, neither in the sum nor in the number of tokens",
             {"logprobs": torch.tensor([[-5.0, -1.0, -2.0, -3.0], [-5.0, -4.0, -6.0, -7.0]]),
              "response_mask": torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]])}),
        Case("responses of different lengths",
             "every response token weighs the same (a mean over tokens, not a mean of per-response means)",
             {"logprobs": torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-4.0, -0.5, -0.5, -0.5]]),
              "response_mask": torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])}),
    ]
    generator = torch.Generator().manual_seed(1)
    for i, (batch, prompt, response) in enumerate([(3, 4, 5), (8, 6, 7), (16, 9, 12)]):
        mask = random_layout(batch, prompt, response, generator)
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response})",
                          "it also agrees on a random batch in the library's layout",
                          {"logprobs": random_logprobs(mask.shape, generator), "response_mask": mask}))
    return cases


def _nll(logprobs, weights, count):
    """Minus the weighted sum of the log-probs over the number of tokens in ``count`` (a mask)."""
    return -(logprobs * weights).sum() / count.sum()


def _shifted_variants(by: int) -> tuple:
    """A shift by one column, as it is usually written: sliced (dividing by the shifted or the
    true count) or rolled (the last column wraps round to the first)."""
    return (lambda lp, m: _nll(lp, shifted(m, by), shifted(m, by)),
            lambda lp, m: _nll(lp, shifted(m, by), m),
            lambda lp, m: _nll(lp, torch.roll(m, by, dims=1), m))


# Each shift's first form is the catalogued implementation, the two others its variants.
_BEFORE, _AFTER = _shifted_variants(-1), _shifted_variants(+1)

MISTAKES = [
    Mistake("sign flipped",
            "the loss is +log-likelihood, so minimising it makes the data *less* likely.",
            "put a minus in front: the loss is the negative log-likelihood.",
            lambda logprobs, mask: (logprobs * mask).sum() / mask.sum()),
    Mistake("prompt tokens not masked",
            "the loss averages over every position, so the prompt and the padding count as if the "
            "model had to write them.",
            "multiply by response_mask before summing, and divide by response_mask.sum().",
            lambda logprobs, mask: -logprobs.mean()),
    Mistake("sum instead of mean over tokens",
            "the loss is the total over all response tokens, so it (and the gradient) grows with the "
            "batch size and the response lengths, and the learning rate means something else each step.",
            "divide by the number of response tokens, response_mask.sum().",
            lambda logprobs, mask: -(logprobs * mask).sum()),
    Mistake("padding counted in the mean",
            "the masked log-probs are averaged with `.mean()`, which divides by every position "
            "(B x T), prompt and padding included, instead of by the number of response tokens.",
            "divide the masked sum by response_mask.sum(), not by logprobs.numel().",
            lambda logprobs, mask: -(logprobs * mask).mean()),
    Mistake("mean of per-response means",
            "each response is averaged first, then the responses: a short response weighs as much as "
            "a long one, so its tokens count more. (Some libraries do this on purpose; minirlhf, like "
            "Hugging Face's causal-LM loss, averages over tokens.)",
            "sum over all response tokens of the batch at once, then divide by response_mask.sum().",
            lambda logprobs, mask: -((logprobs * mask).sum(-1) / mask.sum(-1)).mean()),
    Mistake("sum over tokens, mean over responses",
            "each response's log-probs are summed (the sequence log-likelihood), then averaged over "
            "the batch, so long responses weigh more and the scale depends on their length.",
            "divide by the number of response tokens of the whole batch, response_mask.sum().",
            lambda logprobs, mask: -(logprobs * mask).sum(-1).mean()),
    Mistake("mask inverted",
            "the loss is taken on the prompt and padding positions and the response is left out.",
            "use response_mask as it is: 1 marks the tokens to learn.",
            lambda logprobs, mask: -(logprobs * (1 - mask)).sum() / (1 - mask).sum()),
    Mistake("log-probs shifted by one position (the token before scored)",
            "the log-probs are shifted against the mask (`logprobs[:, :-1]` with `response_mask[:, 1:]`), "
            "as in code that shifts logits and labels; but `token_logprobs` is already aligned "
            "(column t is the log-prob of token t), so shifting again scores the wrong tokens: the "
            "last prompt token in, the `<eos>` out.",
            "use logprobs and response_mask as they are, column for column.",
            _BEFORE[0], variants=_BEFORE[1:]),
    Mistake("log-probs shifted by one position (the token after scored)",
            "the log-probs are shifted against the mask the other way (`logprobs[:, 1:]` with "
            "`response_mask[:, :-1]`, or `torch.roll`): each response token is scored by the log-prob "
            "of the token after it, so the first response token is left out and the padding after the "
            "`<eos>` counts. `token_logprobs` is already aligned: column t is the log-prob of token t.",
            "use logprobs and response_mask as they are, column for column.",
            _AFTER[0], variants=_AFTER[1:]),
    Mistake("EOS left out",
            "the last response token, the `<eos>`, is not counted (or the last column is cut off, "
            "which is the `<eos>` only for the longest response). But the `<eos>` is part of what "
            "the model must learn to write: without it, it never learns to stop.",
            "count every position where response_mask is 1, the `<eos>` included.",
            lambda lp, m: _nll(lp, without_eos(m), without_eos(m)),
            variants=(lambda lp, m: _nll(lp, without_eos(m), m),
                      lambda lp, m: _nll(lp[:, :-1], m[:, :-1], m[:, :-1]),
                      lambda lp, m: _nll(lp[:, :-1], m[:, :-1], m))),
    Mistake("integer mask used as an index",
            "`logprobs[response_mask]` with a 0/1 *integer* mask picks rows 0 and 1 of the batch "
            "(integer indexing), not the masked positions.",
            "index with a boolean mask, `logprobs[response_mask.bool()]`, or multiply by the mask.",
            lambda logprobs, mask: -logprobs[mask].mean()),
]

EXERCISE = Exercise(
    function_name="sft_loss",
    reference=sft_loss,
    reference_name="minirlhf.sft.sft_loss",
    formula="L = - sum(logprobs * response_mask) / sum(response_mask)",
    make_cases=_cases,
    mistakes=MISTAKES,
    grad_args=("logprobs",),
    mask_arg="response_mask",
    points=2,
)


def check_sft_loss(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check a student's ``sft_loss(logprobs, response_mask) -> scalar`` against
    :func:`minirlhf.sft.sft_loss`, and explain any difference. Returns a
    :class:`~minirlhf.exercises.checking.CheckResult`."""
    __tracebackhide__ = True
    return run_check(EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)
