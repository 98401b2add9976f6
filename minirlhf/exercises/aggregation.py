"""Exercise 7: how the critic-free trainer averages its per-token losses (``loss_type``).

The student writes ``aggregate_loss(per_token_loss, response_mask, loss_type, max_tokens,
tokens_per_minibatch)`` -> a scalar, as :func:`minirlhf.grpo_variants.aggregate_loss` (TRL 1.16's
``loss_type``); ``l`` the per-token losses (B, T), ``m`` the response mask (B, T)::

    grpo     mean_i [ sum_t m_it l_it / sum_t m_it ]     each answer's token mean, then the batch mean
    bnpo     sum_it m_it l_it / sum_it m_it              every token of the minibatch weighs the same
    dr_grpo  sum_it m_it l_it / (B * max_tokens)         a constant: B times max_new_tokens
    dapo     sum_it m_it l_it / tokens_per_minibatch     the tokens of the step's whole batch / minibatches

Only the denominators differ, and with them how much a token of a long answer weighs against a
token of a short one.
"""

from __future__ import annotations

import torch

from minirlhf import grpo_variants
from minirlhf.exercises.checking import Case, Exercise, Mistake, random_layout, run_check


def _case(name, probes, per_token, mask, loss_type, max_tokens, tokens_per_minibatch) -> Case:
    return Case(name, probes, {"per_token": torch.tensor(per_token), "response_mask": torch.tensor(mask),
                               "loss_type": loss_type, "max_tokens": max_tokens,
                               "tokens_per_minibatch": tokens_per_minibatch})


# Two answers after a prompt of 2 tokens: one of 3 tokens, one of 1, then padding. The losses on the
# prompt and the padding are not 0 (as a real per-token loss there is not), so counting them shows.
LOSSES = [[5.0, 7.0, 1.0, 2.0, 3.0], [6.0, 8.0, 4.0, 9.0, 9.0]]
MASK = [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]]


def _cases() -> list[Case]:
    cases = [
        _case("GRPO, a long and a short answer", "grpo: each answer's token mean, (1 + 2 + 3) / 3 = 2 "
              "and 4 / 1 = 4, then the mean of the answers: 3. The prompt and the padding do not count",
              LOSSES, MASK, "grpo", 8, 6.0),
        _case("BNPO, the same answers", "bnpo: every response token of the minibatch weighs the same: "
              "(1 + 2 + 3 + 4) / 4 tokens = 2.5", LOSSES, MASK, "bnpo", 8, 6.0),
        _case("Dr. GRPO, the same answers", "dr_grpo: the sum over the response tokens divided by the "
              "constant B * max_tokens = 2 * 8, not by any count of the batch's tokens: 10 / 16 = 0.625",
              LOSSES, MASK, "dr_grpo", 8, 6.0),
        _case("DAPO, the same answers", "dapo: the sum divided by tokens_per_minibatch, the response "
              "tokens of the step's whole batch over its minibatches (here 6.0, more than this "
              "minibatch's 4): 10 / 6", LOSSES, MASK, "dapo", 8, 6.0),
        _case("answers of equal length", "with every answer as long, grpo and bnpo agree: "
              "(1 + 2 + 3 + 4) / 4 = 2.5", [[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]],
              [[1, 1, 0], [1, 1, 0]], "grpo", 4, 4.0),
    ]
    generator = torch.Generator().manual_seed(71)
    for i, (batch, prompt, response, loss_type) in enumerate([
            (4, 3, 5, "grpo"), (6, 2, 7, "bnpo"), (5, 4, 6, "dr_grpo"), (8, 3, 9, "dapo"),
            (7, 2, 8, "grpo"), (6, 3, 5, "dr_grpo")]):
        mask = random_layout(batch, prompt, response, generator)
        max_tokens = response + 3  # max_new_tokens: longer than the longest answer of the batch
        tokens = float(mask.sum()) * 1.5  # the step's batch holds more tokens than this minibatch
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response}, {loss_type})",
                          "it also agrees on a random batch",
                          {"per_token": torch.randn(batch, prompt + response, generator=generator),
                           "response_mask": mask, "loss_type": loss_type, "max_tokens": max_tokens,
                           "tokens_per_minibatch": tokens}))
    return cases


def _with(losses, m, k, n, t, **slips):
    """The library's aggregation with switches for the usual slips (none given: the right answer)."""
    m = m.to(losses.dtype)
    total = losses * m if not slips.get("unmasked") else losses
    count = m if not (slips.get("unmasked") or slips.get("count_all")) else torch.ones_like(m)
    if slips.get("unnormalised"):
        return total.sum()
    if k == "grpo" and not slips.get("grpo_as_bnpo"):
        return (total.sum(-1) / count.sum(-1)).mean()
    if k == "bnpo" and slips.get("bnpo_as_grpo"):
        return (total.sum(-1) / count.sum(-1)).mean()
    if k in ("grpo", "bnpo") or (k == "dapo" and slips.get("dapo_as_bnpo")):
        return total.sum() / count.sum()
    if k == "dr_grpo":
        divisor = slips.get("dr_grpo_divisor")
        return total.sum() / (divisor(m) if divisor else losses.shape[0] * n)
    return total.sum() / t


def _slip(**slips):
    return lambda losses, m, k, n, t: _with(losses, m, k, n, t, **slips)


MISTAKES = [
    Mistake("padding tokens counted",
            "the mask is left out, so the losses on the prompt and the padding are averaged in as if "
            "the policy had written those tokens (`per_token_loss.mean()`, or `.mean(-1)` per answer).",
            "multiply by the mask before summing, `(per_token_loss * response_mask).sum(...)`, and "
            "count only the response tokens, `response_mask.sum(...)`.",
            _slip(unmasked=True)),
    Mistake("masked sum divided by every position",
            "the losses are masked, but the count is of every position of the grid, prompt and padding "
            "included (`(per_token_loss * response_mask).mean()`): the mean of the answer's tokens is "
            "then shrunk by how much padding its row has.",
            "divide by the number of response tokens: `response_mask.sum(-1)` for grpo, "
            "`response_mask.sum()` for bnpo.",
            _slip(count_all=True)),
    Mistake("grpo: token mean over the batch instead of each answer's mean",
            "for loss_type 'grpo' every response token of the batch is averaged at once (as 'bnpo' does; "
            "`per_token_loss[response_mask.bool()].mean()` does the same): GRPO first takes each answer's "
            "mean, so a short answer weighs as much as a long one, and then the mean of the answers.",
            "for 'grpo': `((per_token_loss * m).sum(-1) / m.sum(-1)).mean()`.",
            _slip(grpo_as_bnpo=True)),
    Mistake("bnpo: per-answer mean where the token mean over the batch is meant",
            "for loss_type 'bnpo' each answer's token mean is taken first, then their mean (as 'grpo' "
            "does): BNPO's point is that every token of the minibatch weighs the same, whatever the "
            "length of its answer.",
            "for 'bnpo': `(per_token_loss * m).sum() / m.sum()`, one sum over the whole (B, T) grid.",
            _slip(bnpo_as_grpo=True)),
    Mistake("Dr. GRPO divided by the number of answers",
            "for 'dr_grpo' the sum is divided by B, the number of answers, and max_tokens is forgotten: "
            "the loss is then max_tokens times too large. Dr. GRPO divides by the constant "
            "B * max_new_tokens.",
            "for 'dr_grpo': `(per_token_loss * m).sum() / (B * max_tokens)`, B = `per_token_loss.shape[0]`.",
            _slip(dr_grpo_divisor=lambda m: m.shape[0])),
    Mistake("Dr. GRPO's constant taken from the batch, not from max_tokens",
            "for 'dr_grpo' the sum is divided by B times a length read off the batch (the longest answer, "
            "or the grid's width T), not by B * max_tokens: the divisor then changes from batch to batch "
            "with the answers' lengths, which is the very bias Dr. GRPO removes.",
            "divide by `per_token_loss.shape[0] * max_tokens`, the constant max_new_tokens of the "
            "generation, whatever the batch holds.",
            _slip(dr_grpo_divisor=lambda m: m.shape[0] * m.sum(-1).max()),
            variants=(_slip(dr_grpo_divisor=lambda m: m.shape[0] * m.shape[1]),)),
    Mistake("Dr. GRPO divided by the response tokens",
            "for 'dr_grpo' the sum is divided by the number of response tokens (as 'bnpo' does): "
            "the divisor then depends on the answers' lengths again.",
            "divide by the constant `per_token_loss.shape[0] * max_tokens`.",
            _slip(dr_grpo_divisor=lambda m: m.sum())),
    Mistake("dapo: divided by this minibatch's tokens",
            "for 'dapo' the sum is divided by the response tokens of this minibatch (as 'bnpo' does), and "
            "tokens_per_minibatch is not used: DAPO divides every minibatch by the same number, the "
            "tokens of the step's whole batch over the number of minibatches.",
            "for 'dapo': `(per_token_loss * m).sum() / tokens_per_minibatch`.",
            _slip(dapo_as_bnpo=True)),
    Mistake("summed, not normalised",
            "the masked losses are summed and never divided: the loss, and the step, then grow with the "
            "batch and with the answers' lengths.",
            "divide the sum by the loss type's denominator (see the table above the function).",
            _slip(unnormalised=True)),
]

EXERCISE = Exercise(
    function_name="aggregate_loss",
    reference=grpo_variants.aggregate_loss,
    reference_name="minirlhf.grpo_variants.aggregate_loss",
    formula="grpo: mean_i(sum_t m l / sum_t m); bnpo: sum m l / sum m; dr_grpo: sum m l / (B * max_tokens); "
            "dapo: sum m l / tokens_per_minibatch",
    make_cases=_cases,
    mistakes=MISTAKES,
    grad_args=("per_token",),
    points=2,
)


def check_aggregate_loss(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``aggregate_loss(per_token_loss, response_mask, loss_type, max_tokens,
    tokens_per_minibatch) -> scalar`` against :func:`minirlhf.grpo_variants.aggregate_loss`, and explain any
    difference."""
    __tracebackhide__ = True
    return run_check(EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)
