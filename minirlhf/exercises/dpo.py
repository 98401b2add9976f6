"""Exercise 5: sequence log-probabilities and the DPO loss.

The student writes two functions:

* ``sequence_logps(token_logps, response_mask)`` -> (B,): log pi(y | x), the **sum** of the
  response tokens' log-probs, as :func:`minirlhf.logprobs.sequence_logprobs` computes it;
* ``dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
  beta)`` -> (B,), one loss per pair: the losses of :func:`minirlhf.dpo.preference_loss`::

      L = -log sigmoid( beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))] )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minirlhf.dpo import preference_loss
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

# ---------------------------------------------------------------------------------------------
# Exercise 5a: log pi(y | x) from the per-token log-probs


def masked_sequence_sum(token_logps: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """The last line of :func:`minirlhf.logprobs.sequence_logprobs`, on given token log-probs:
    ``sum_t token_logps[b, t] * response_mask[b, t]``. Shapes (B, T) -> (B,). (The tests check that
    the two agree on a real batch of the shipped model.)"""
    return (token_logps * response_mask).sum(-1)


def _sequence_cases() -> list[Case]:
    cases = [
        Case("one response, no prompt", "log pi(y|x) is the sum of the tokens' log-probs "
             "(the log of the product of their probabilities)",
             {"token_logps": torch.tensor([[-0.5, -1.0, -0.25]]),
              "response_mask": torch.tensor([[1, 1, 1]])}),
        Case("prompt and padding present", "prompt and padding tokens are not part of y",
             {"token_logps": torch.tensor([[-7.0, -0.5, -1.0, -4.0], [-7.0, -2.0, -3.0, -0.5]]),
              "response_mask": torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])}),
        Case("responses of different lengths", "a longer response has a lower log-prob: it is a sum, "
             "not a mean, over its tokens",
             {"token_logps": torch.tensor([[-0.5, -0.5, -0.5, -0.5], [-0.5, -0.5, -9.0, -9.0]]),
              "response_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}),
    ]
    generator = torch.Generator().manual_seed(7)
    # Two answers of 120 and 100 tokens at log-probs between -10 and -6: log pi(y|x) is about
    # -960 and -800, an ordinary number, but pi(y|x) itself, exp(-960), is 0 even in float64.
    mask = torch.zeros(2, 3 + 120, dtype=torch.long)
    mask[0, 3:], mask[1, 3:3 + 100] = 1, 1
    cases.append(Case("long, unlikely answers", "the log-prob of a long, unlikely answer is an ordinary "
                      "number (about -960 here) although its probability underflows to 0 in any float "
                      "type: add the log-probs, never multiply the probabilities",
                      {"token_logps": -6 - 4 * torch.rand(mask.shape, generator=generator),
                       "response_mask": mask}))
    for i, (batch, prompt, response) in enumerate([(5, 4, 6), (12, 6, 11)]):
        mask = random_layout(batch, prompt, response, generator)
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response})", "it also agrees on a "
                          "random batch", {"token_logps": random_logprobs(mask.shape, generator),
                                           "response_mask": mask}))
    return cases


def _sum_with(token_logps, weights):
    return (token_logps * weights).sum(-1)


SEQUENCE_MISTAKES = [
    Mistake("mean instead of sum over tokens",
            "each sequence's log-prob is averaged over its tokens: that is not log pi(y|x), and it hides "
            "how much less likely a long answer is. (IPO and some length-normalised variants average on "
            "purpose; DPO as derived sums.)",
            "sum over the response tokens: (token_logps * response_mask).sum(-1).",
            lambda lp, m: (lp * m).sum(-1) / m.sum(-1)),
    Mistake("prompt tokens not masked",
            "the sum includes the prompt and the padding, so it measures how likely the model finds the "
            "question too, and the padding's meaningless log-probs.",
            "multiply by response_mask before summing.",
            lambda lp, m: lp.sum(-1)),
    Mistake("summed over the batch, not the tokens",
            "the sum runs over dim 0 (the examples) instead of dim -1 (the tokens).",
            "sum over the last dimension: .sum(-1) (or .sum(dim=1)).",
            lambda lp, m: (lp * m).sum(0)),
    Mistake("summed over the whole batch",
            "all the response tokens of all the answers are added into one number; DPO needs one "
            "log-prob per answer.",
            "sum over the tokens only: .sum(-1), which leaves one value per row.",
            lambda lp, m: (lp * m).sum()),
    Mistake("mask inverted",
            "the sum covers the prompt and padding and leaves out the response.",
            "use response_mask as it is: 1 marks the response tokens.",
            lambda lp, m: (lp * (1 - m)).sum(-1)),
    Mistake("log-probs shifted by one position (the token before scored)",
            "the log-probs are shifted against the mask (`token_logps[:, :-1]` with "
            "`response_mask[:, 1:]`), as in code that shifts logits and labels; but the token log-probs "
            "are already aligned (column t is the log-prob of token t), so the last prompt token is "
            "counted and the `<eos>` is not.",
            "use token_logps and response_mask as they are, column for column.",
            lambda lp, m: _sum_with(lp, shifted(m, -1)),
            variants=(lambda lp, m: _sum_with(lp, torch.roll(m, -1, dims=1)),)),
    Mistake("log-probs shifted by one position (the token after scored)",
            "the log-probs are shifted against the mask the other way (`token_logps[:, 1:]` with "
            "`response_mask[:, :-1]`, or `torch.roll`): the first response token is left out and the "
            "padding after the `<eos>` counts.",
            "use token_logps and response_mask as they are, column for column.",
            lambda lp, m: _sum_with(lp, shifted(m, +1)),
            variants=(lambda lp, m: _sum_with(lp, torch.roll(m, 1, dims=1)),)),
    Mistake("EOS left out",
            "the last response token, the `<eos>`, is not counted (or the last column is cut off, "
            "which is the `<eos>` only for the longest answer); but choosing to stop is part of the "
            "answer, and DPO must be able to raise or lower it too.",
            "sum over every position where response_mask is 1, the `<eos>` included.",
            lambda lp, m: _sum_with(lp, without_eos(m)),
            variants=(lambda lp, m: _sum_with(lp[:, :-1], m[:, :-1]),)),
    Mistake("log of the product of the probabilities",
            "the probabilities are multiplied and the log taken at the end; the two are equal on "
            "paper, but the product of many small probabilities underflows to 0 (a 120-token answer "
            "at log-prob -8 per token has probability exp(-960)), so its log is -inf.",
            "add the log-probs: (token_logps * response_mask).sum(-1); never leave the log domain.",
            lambda lp, m: torch.log(torch.where(m.bool(), lp.exp(), torch.ones_like(lp)).prod(-1))),
]

SEQUENCE_EXERCISE = Exercise(
    function_name="sequence_logps",
    reference=masked_sequence_sum,
    reference_name="minirlhf.logprobs.sequence_logprobs (its sum over response tokens)",
    formula="log pi(y|x)[b] = sum_t token_logps[b, t] * response_mask[b, t]",
    make_cases=_sequence_cases,
    mistakes=SEQUENCE_MISTAKES,
    output_names=("logps",),
    grad_args=("token_logps",),
    points=1,
)


def check_sequence_logps(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``sequence_logps(token_logps, response_mask) -> (B,)``, the summed log-prob of each
    response, against :func:`minirlhf.logprobs.sequence_logprobs`' sum, and explain any difference."""
    __tracebackhide__ = True
    return run_check(SEQUENCE_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)


# ---------------------------------------------------------------------------------------------
# Exercise 5b: the DPO loss


def _dpo_case(name, probes, pc, pr, rc, rr, beta) -> Case:
    logps = [torch.tensor(x) for x in (pc, pr, rc, rr)]
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    return Case(name, probes, {**dict(zip(names, logps)), "beta": beta})


def _dpo_cases() -> list[Case]:
    cases = [
        _dpo_case("policy equal to the reference", "at the start of training (pi = pi_ref) every pair "
                  "costs log 2, whatever the log-probs", [-4.0], [-3.0], [-4.0], [-3.0], 0.1),
        _dpo_case("policy raised the chosen answer",
                  "the loss falls when the policy raises the chosen answer *relative to the reference*",
                  [-2.0], [-3.0], [-4.0], [-3.0], 0.5),
        _dpo_case("already preferred by the reference",
                  "only the change from the reference counts: the reference preferring y_w already "
                  "earns nothing", [-1.0, -6.0], [-5.0, -2.0], [-1.5, -6.5], [-4.0, -2.5], 0.1),
        _dpo_case("one loss per pair", "the result has one value per pair, shape (B,), and beta scales "
                  "the margin inside the log-sigmoid", [-10.0, -3.0, -7.0], [-12.0, -2.0, -7.5],
                  [-11.0, -2.5, -6.0], [-11.0, -2.5, -9.0], 2.0),
        _dpo_case("a huge margin the wrong way",
                  "the loss stays finite when the policy badly prefers the rejected answer",
                  [-300.0], [-1.0], [-2.0], [-2.0], 1.0),
    ]
    generator = torch.Generator().manual_seed(8)
    for i, (batch, beta) in enumerate([(4, 0.1), (32, 0.5)]):
        ref = -8 * torch.rand(2, batch, generator=generator) - 1
        policy = ref + torch.randn(2, batch, generator=generator)
        args = {"policy_chosen_logps": policy[0], "policy_rejected_logps": policy[1],
                "ref_chosen_logps": ref[0], "ref_rejected_logps": ref[1], "beta": beta}
        cases.append(Case(f"random batch {i + 1} ({batch} pairs, beta={beta})",
                          "it also agrees on random log-probs", args))
    return cases


def _margin(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


DPO_MISTAKES = [
    Mistake("reference log-probs missing",
            "the loss uses log pi(y_w) - log pi(y_l) alone: without the reference nothing anchors the "
            "policy, and the loss is not log 2 at the start of training.",
            "use log-ratios to the reference: "
            "(policy_chosen - ref_chosen) - (policy_rejected - ref_rejected).",
            lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr))),
    Mistake("beta outside the log-sigmoid",
            "the loss is -beta * logsigmoid(margin): beta then only scales the loss (like a learning "
            "rate) instead of setting how far the policy may move from the reference.",
            "multiply the margin by beta *inside*: -logsigmoid(beta * margin).",
            lambda pc, pr, rc, rr, b: -b * F.logsigmoid(_margin(pc, pr, rc, rr))),
    Mistake("beta divides the margin",
            "the margin is divided by beta: a small beta, which should keep the policy near the "
            "reference, makes every step huge.",
            "multiply: -logsigmoid(beta * margin).",
            lambda pc, pr, rc, rr, b: -F.logsigmoid(_margin(pc, pr, rc, rr) / b)),
    Mistake("beta on the policy term only",
            "beta multiplies log pi(y_w) - log pi(y_l) but not the reference's part, so the two no "
            "longer cancel at pi = pi_ref.",
            "apply beta to the whole margin: beta * ((pc - rc) - (pr - rr)).",
            lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr) - (rc - rr))),
    Mistake("beta on the chosen log-ratio only",
            "the margin is beta * chosen_ratio - rejected_ratio (a missing pair of brackets): the two "
            "answers are weighed differently.",
            "put the whole difference in brackets: beta * (chosen_ratio - rejected_ratio).",
            lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - rc) - (pr - rr))),
    Mistake("chosen and rejected swapped",
            "the loss falls when the *rejected* answer gains probability: training teaches the "
            "opposite of the preferences. (Swapping policy and reference in both log-ratios does "
            "the same.)",
            "the margin is (chosen log-ratio) - (rejected log-ratio), and the loss "
            "-logsigmoid(beta * margin).",
            lambda pc, pr, rc, rr, b: -F.logsigmoid(-b * _margin(pc, pr, rc, rr))),
    Mistake("reference added instead of subtracted",
            "the log-ratios are written log pi + log pi_ref: a log-ratio is a difference of logs.",
            "log(pi / pi_ref) = log pi - log pi_ref.",
            lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc + rc) - (pr + rr)))),
    Mistake("minus sign missing",
            "the function returns logsigmoid(beta * margin), the log-likelihood, which should go up; "
            "minimising it pushes the preferences the wrong way.",
            "the loss is the negative log-likelihood: -logsigmoid(beta * margin).",
            lambda pc, pr, rc, rr, b: F.logsigmoid(b * _margin(pc, pr, rc, rr))),
    Mistake("log(sigmoid(x)) computed in two steps",
            "for a large negative margin sigmoid(x) rounds to 0 in float32 and its log is -inf.",
            "use torch.nn.functional.logsigmoid.",
            lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(b * _margin(pc, pr, rc, rr)))),
    Mistake("averaged over the batch",
            "the function returns one number, the mean; minirlhf's preference_loss, like TRL's, returns one "
            "loss per pair (the trainer averages, and logs per-pair metrics).",
            "remove the final .mean(): return a tensor of shape (B,).",
            lambda pc, pr, rc, rr, b: -F.logsigmoid(b * _margin(pc, pr, rc, rr)).mean()),
]

def _dpo_losses(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """The library's plain DPO loss of each pair, (B,): the losses of :func:`minirlhf.dpo.preference_loss`."""
    losses, _, _ = preference_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                   ref_rejected_logps, beta)
    return losses


DPO_EXERCISE = Exercise(
    function_name="dpo_loss",
    reference=_dpo_losses,
    reference_name="minirlhf.dpo.preference_loss",
    formula="L = -logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))), "
            "one value per pair",
    make_cases=_dpo_cases,
    mistakes=DPO_MISTAKES,
    output_names=("losses",),
    grad_args=("policy_chosen_logps", "policy_rejected_logps"),
    points=2,
)


def check_dpo_loss(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
    ref_rejected_logps, beta) -> (B,)`` against the losses of :func:`minirlhf.dpo.preference_loss`."""
    __tracebackhide__ = True
    return run_check(DPO_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)
