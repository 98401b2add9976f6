"""Exercise 2: the Bradley-Terry loss of a reward model.

The student writes ``bradley_terry_loss(chosen_scores, rejected_scores)``, the mean negative
log-likelihood of "chosen beats rejected" (see :func:`minirlhf.reward.bradley_terry_loss`)::

    L = - mean_b log sigmoid(r_chosen[b] - r_rejected[b])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minirlhf.exercises.checking import Case, Exercise, Mistake, run_check
from minirlhf.reward import bradley_terry_loss


def _pair(chosen, rejected) -> dict:
    return {"chosen_scores": torch.tensor(chosen), "rejected_scores": torch.tensor(rejected)}


def _cases() -> list[Case]:
    cases = [
        Case("equal scores", "a pair the model cannot tell apart costs log 2 (a coin flip)",
             _pair([0.0], [0.0])),
        Case("chosen scored higher", "a pair ranked the right way costs little, and the loss "
             "falls as the margin grows", _pair([2.0], [0.0])),
        Case("a batch of three pairs", "the loss is the mean over the pairs of the batch",
             _pair([1.0, 0.5, -1.0], [0.0, 1.5, -3.0])),
        Case("scores far from zero", "only the difference of the two scores matters (adding 5 "
             "to both changes nothing)", _pair([5.0, 6.0], [4.0, 7.0])),
        Case("a huge margin the wrong way", "the loss stays finite (about the margin) even when "
             "the rejected answer scores 110 points higher", _pair([-50.0, 0.0], [60.0, 0.0])),
    ]
    generator = torch.Generator().manual_seed(2)
    for i, batch in enumerate((4, 16, 64)):
        chosen, rejected = 2 * torch.randn(2, batch, generator=generator)
        cases.append(Case(f"random batch {i + 1} ({batch} pairs)",
                          "it also agrees on random scores", {"chosen_scores": chosen,
                                                              "rejected_scores": rejected}))
    return cases


MISTAKES = [
    Mistake("chosen and rejected swapped",
            "the loss rewards the *rejected* answer scoring higher, so training teaches the reward "
            "model the opposite of the rater. (`softplus(chosen - rejected)` does the same: it is "
            "`-logsigmoid(rejected - chosen)`.)",
            "the margin is chosen_scores - rejected_scores, inside -logsigmoid(...).",
            lambda c, r: -F.logsigmoid(r - c).mean()),
    Mistake("minus sign missing",
            "the function returns the log-likelihood, which should go *up*; minimising it pushes the "
            "scores the wrong way.",
            "the loss is the *negative* log-likelihood: -logsigmoid(chosen - rejected).",
            lambda c, r: F.logsigmoid(c - r).mean()),
    Mistake("sum instead of mean over pairs",
            "the loss grows with the batch size, and so do the gradients: the learning rate means "
            "something else for every batch size.",
            "average over the pairs with .mean().",
            lambda c, r: -F.logsigmoid(c - r).sum()),
    Mistake("log(sigmoid(x)) computed in two steps",
            "the log-sigmoid is computed through an intermediate that over- or underflows "
            "(log(sigmoid(x)), log1p(exp(-x)), ...): for a large margin the wrong way, sigmoid(x) rounds "
            "to exactly 0 (or exp(-x) to inf) in float32, the loss becomes inf and training stops.",
            "use torch.nn.functional.logsigmoid(x), which computes log(sigmoid(x)) without rounding "
            "sigmoid(x) first.",
            lambda c, r: -torch.log(torch.sigmoid(c - r)).mean()),
    Mistake("probability instead of log-probability",
            "the loss is -sigmoid(margin): it does push the margin up, but it is not the likelihood "
            "of the data, and its gradient vanishes exactly where the model is most wrong.",
            "take the log: -logsigmoid(chosen - rejected).",
            lambda c, r: -torch.sigmoid(c - r).mean()),
    Mistake("each score through its own sigmoid",
            "the loss treats each score as a separate yes/no classification (chosen = 1, rejected = "
            "0), so it depends on the scores themselves, not only on their difference; Bradley-Terry "
            "compares the two answers of a pair.",
            "put the *difference* of the two scores through one log-sigmoid.",
            lambda c, r: -(F.logsigmoid(c) + F.logsigmoid(-r)).mean()),
    Mistake("margins averaged before the log-sigmoid",
            "the mean is taken over the margins first and the log-sigmoid after: a loss of the "
            "average pair, not the average loss of the pairs.",
            "apply -logsigmoid to each pair's margin, then take the mean.",
            lambda c, r: -F.logsigmoid((c - r).mean())),
    Mistake("a hinge (margin) loss instead of the logistic one",
            "max(0, 1 - margin) ranks the pairs too, but it is not the Bradley-Terry likelihood: the "
            "scores it learns are not log-odds of preference.",
            "use -logsigmoid(chosen - rejected).",
            lambda c, r: torch.relu(1 - (c - r)).mean()),
]

EXERCISE = Exercise(
    function_name="bradley_terry_loss",
    reference=bradley_terry_loss,
    reference_name="minirlhf.reward.bradley_terry_loss",
    formula="L = - mean( logsigmoid(chosen_scores - rejected_scores) )",
    make_cases=_cases,
    mistakes=MISTAKES,
    grad_args=("chosen_scores", "rejected_scores"),
    points=2,
)


def check_bradley_terry_loss(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check a student's ``bradley_terry_loss(chosen_scores, rejected_scores) -> scalar`` against
    :func:`minirlhf.reward.bradley_terry_loss`, and explain any difference."""
    __tracebackhide__ = True
    return run_check(EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)
