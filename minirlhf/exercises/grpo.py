"""Exercise 6: group-relative advantages (GRPO, Dr. GRPO, RLOO) and their place on the token grid.

The student writes two functions:

* ``group_advantages(rewards, group_size, advantage)`` -> (B,), as :func:`minirlhf.grpo.group_advantages`
  (its default ``eps=1e-4``): ``rewards`` (B,) hold the G = ``group_size`` answers of each prompt
  in consecutive rows, and mean and std are taken over each group, never over the batch::

      grpo     A_i = (R_i - mean_g R) / (std_g R + 1e-4)    std: the sample std (divides by G - 1)
      dr_grpo  A_i =  R_i - mean_g R
      rloo     A_i =  R_i - sum_{j != i} R_j / (G - 1)      (the answer left out of its own baseline)

* ``token_advantages(advantages, response_mask)`` -> (B, T): each answer's one advantage on every
  one of its response tokens, 0 on the prompt and the padding, as :func:`minirlhf.grpo.grpo_loss`
  weighs them (``advantages[:, None]`` times :func:`minirlhf.grpo.token_weights` without length
  normalisation; the tests check the two agree).
"""

from __future__ import annotations

import warnings

import torch

from minirlhf import grpo
from minirlhf.exercises.checking import Case, Convention, Exercise, Mistake, random_layout, run_check
from minirlhf.logprobs import last_token_index

EPS = 1e-4  # minirlhf.grpo.group_advantages's default, as TRL's GRPOTrainer

# ---------------------------------------------------------------------------------------------
# Exercise 6a: group-relative advantages


def _case(name, probes, rewards, group_size, advantage) -> Case:
    return Case(name, probes, {"rewards": torch.tensor(rewards), "group_size": group_size,
                               "advantage": advantage})


# Three prompts, G = 4 answers each, in consecutive rows (true rewards of the toy world: +1 correct,
# 0 correct hedge, -1 wrong city, -1.5 wrong hedge). The groups' means differ, so statistics over
# the batch give other numbers than statistics over each group; B = 12 is not G^2 = 16, so reading
# the rows in another layout does too.
THREE_PROMPTS = [1.0, 0.0, 0.0, -1.0, 1.0, 1.0, 1.0, 0.0, -1.0, -1.0, 0.0, -1.5]


def _advantage_cases() -> list[Case]:
    cases = [
        _case("GRPO, one group of 4", "A = (R - mean) / (std + 1e-4) over the group: here mean 0 and "
              "std sqrt(2/3) = 0.8165, the sample std (sum of squares / (G - 1) = 2/3), so A = "
              "+-1 / (0.8165 + 0.0001) = +-1.2246 and 0", [1.0, 0.0, 0.0, -1.0], 4, "grpo"),
        _case("Dr. GRPO, the same group", "Dr. GRPO subtracts the group mean and divides by nothing: "
              "A = R - mean = [1, 0, 0, -1]", [1.0, 0.0, 0.0, -1.0], 4, "dr_grpo"),
        _case("RLOO, the same group", "RLOO's baseline for an answer is the mean of the *other* G - 1: "
              "the first answer's is (0 + 0 - 1) / 3, so its advantage is 1 + 1/3 = 4/3",
              [1.0, 0.0, 0.0, -1.0], 4, "rloo"),
        _case("every answer scored the same", "a group whose answers all score the same teaches "
              "nothing: std 0, every advantage 0 (the + 1e-4 keeps it 0, not 0 / 0 = nan)",
              [1.0, 1.0, 1.0, 1.0, -1.5, -1.5, -1.5, -1.5], 4, "grpo"),
        _case("rewards that barely differ", "the 1e-4 is added to the std (as in TRL), so a group "
              "whose rewards differ only by noise is not blown up to +-1.22: here std 0.00082, A = +-1.09",
              [0.001, 0.0, 0.0, -0.001], 4, "grpo"),
        _case("three prompts in one batch (GRPO)", "the G answers of a prompt are consecutive rows, "
              "and mean and std are over each group of G, never over the whole batch",
              THREE_PROMPTS, 4, "grpo"),
        _case("three prompts in one batch (Dr. GRPO)", "each answer is compared with the mean of its "
              "own group", THREE_PROMPTS, 4, "dr_grpo"),
        _case("three prompts in one batch (RLOO)", "each answer's baseline is the mean of the other "
              "answers of its own group", THREE_PROMPTS, 4, "rloo"),
        _case("RLOO with groups of 2", "with G = 2 the baseline of an answer is the other answer: "
              "A = R_1 - R_2 and R_2 - R_1", [1.0, -1.0, 0.0, 0.0, 1.0, 0.0], 2, "rloo"),
    ]
    generator = torch.Generator().manual_seed(61)
    world_rewards = torch.tensor([1.0, 0.0, -1.0, -1.5])
    for i, (prompts, group, advantage, continuous) in enumerate([(4, 8, "grpo", False), (6, 4, "rloo", True),
                                                            (3, 6, "dr_grpo", True), (5, 4, "grpo", True),
                                                            (7, 3, "rloo", False)]):
        if continuous:  # a score minus beta times the summed log-ratio: every reward differs
            rewards = 1.5 * torch.randn(prompts * group, generator=generator)
        else:  # the true rewards: some groups all alike
            rewards = world_rewards[torch.randint(4, (prompts * group,), generator=generator)]
            rewards[:group] = 1.0
        cases.append(Case(f"random batch {i + 1} ({prompts} prompts x G = {group}, {advantage})",
                          "it also agrees on a random batch", {"rewards": rewards, "group_size": group,
                                                               "advantage": advantage}))
    return cases


def _advantages_with(rewards, group_size, advantage, *, stats="group", std_fn=None, eps=EPS,
                     eps_in_root=False, rloo_self=False, rloo_divisor=None, dr_grpo_std=False):
    """The library's advantages, with switches for the usual slips (defaults = the right answer).

    ``stats``: where mean and std come from: ``"group"`` (right), ``"batch"`` (both over the batch),
    ``"batch_std"`` (group mean, batch std), ``"interleaved"`` (a group is every (B/G)-th row),
    ``"n_groups"`` (``group_size`` taken as the number of groups)."""
    with warnings.catch_warnings():  # the std of a 'group' of one answer warns (and is nan): as the slip's
        warnings.simplefilter("ignore")
        return _advantages(rewards, group_size, advantage, stats, std_fn or _sample_std, eps, eps_in_root,
                           rloo_self, rloo_divisor or (lambda n: n - 1), dr_grpo_std)


def _advantages(rewards, group_size, advantage, stats, std_fn, eps, eps_in_root, rloo_self, rloo_divisor,
                dr_grpo_std):
    B = rewards.shape[0]
    if stats == "interleaved":
        groups = rewards.view(group_size, -1).T
    elif stats == "n_groups":
        groups = rewards.view(group_size, -1)
    elif stats == "batch":
        groups = rewards.view(1, -1)
    else:
        groups = rewards.view(-1, group_size)
    n = groups.shape[-1]
    mean = groups.mean(-1, keepdim=True)
    if advantage == "grpo" or (advantage == "dr_grpo" and dr_grpo_std):
        std = std_fn(rewards.view(1, -1), -1) if stats == "batch_std" else std_fn(groups, -1)
        scale = (std ** 2 + eps).sqrt() if eps_in_root else std + eps
        out = (groups - mean) / scale
    elif advantage == "dr_grpo" or rloo_self:
        out = groups - mean
    else:
        baseline = (groups.sum(-1, keepdim=True) - groups) / rloo_divisor(n)
        out = groups - baseline
    if stats == "interleaved":
        out = out.T
    return out.reshape(B)


def _sample_std(x, dim):
    return x.std(dim, keepdim=True)


def _population_std(x, dim):
    return x.std(dim, keepdim=True, unbiased=False)


ADVANTAGE_MISTAKES = [
    Mistake("mean and std over the whole batch, not the group",
            "the rewards of every prompt in the batch are pooled: an answer is then compared with the "
            "answers to *other* prompts, so an easy prompt's answers all look good and a hard prompt's "
            "all bad, whatever they said. (For RLOO: the baseline is the mean of every other answer "
            "in the batch.)",
            "reshape the rewards to (B / G, G), `rewards.view(-1, group_size)`, and take mean and std "
            "along the last dimension (`keepdim=True`), then flatten back.",
            lambda r, g, k: _advantages_with(r, g, k, stats="batch")),
    Mistake("std over the whole batch, not the group",
            "the mean is the group's but the std is the batch's (`rewards.std()`): each group's "
            "advantages are then scaled by how spread the *whole batch* is. (TRL offers this as "
            "`scale_rewards=\"batch\"`; GRPO as published, TRL's default and minirlhf divide by the "
            "group's std.)",
            "take the std over each group too: `rewards.view(-1, group_size).std(-1, keepdim=True)`.",
            lambda r, g, k: _advantages_with(r, g, k, stats="batch_std"),
            variants=(lambda r, g, k: _advantages_with(r, g, k, stats="batch_std", std_fn=_population_std),)),
    Mistake("groups read as interleaved rows",
            "the rewards are reshaped to (G, B / G), `rewards.view(group_size, -1)`, and the "
            "statistics taken along dim 0: a group is then rows i, i + B/G, i + 2B/G, ..., answers to "
            "*different* prompts. In minirlhf (as in TRL) the G answers of a prompt are consecutive "
            "rows.",
            "reshape with `rewards.view(-1, group_size)` (one row per prompt) and reduce along dim -1.",
            lambda r, g, k: _advantages_with(r, g, k, stats="interleaved")),
    Mistake("group_size read as the number of groups",
            "the rewards are reshaped to `rewards.view(group_size, -1)`, i.e. into G groups of B / G "
            "rows, instead of B / G groups of G rows: on a batch of one prompt each 'group' is a "
            "single answer.",
            "reshape with `rewards.view(-1, group_size)`: B / G rows (prompts) of G answers each.",
            lambda r, g, k: _advantages_with(r, g, k, stats="n_groups")),
    Mistake("population std (divided by G) instead of the sample std (divided by G - 1)",
            "the std divides the sum of squares by G (`std(unbiased=False)`, `correction=0`, or "
            "NumPy's default); minirlhf, like TRL, uses torch's default, the sample std, which "
            "divides by G - 1. With groups of 4 to 8 the two differ by 7 to 15 %.",
            "use `groups.std(-1, keepdim=True)` (torch's default), or sqrt(sum (R - mean)^2 / (G - 1)).",
            lambda r, g, k: _advantages_with(r, g, k, std_fn=_population_std)),
    Mistake("epsilon missing",
            "the advantages are divided by the bare std: a group whose answers all score the same "
            "(common once the policy is good) gives 0 / 0 = nan, which poisons the whole update.",
            "divide by std + 1e-4.",
            lambda r, g, k: _advantages_with(r, g, k, eps=0.0)),
    Mistake("RLOO baseline includes the answer itself",
            "for RLOO the baseline is the mean of the whole group, the answer included: that is "
            "Dr. GRPO's advantage, (G - 1) / G times RLOO's, and the baseline then depends on the very "
            "answer it judges. Leaving the answer out is what makes it an unbiased baseline.",
            "subtract the mean of the *other* G - 1 answers: (group sum - R_i) / (G - 1).",
            lambda r, g, k: _advantages_with(r, g, k, rloo_self=True)),
    Mistake("leave-one-out sum divided by G",
            "the RLOO baseline leaves the answer out of the sum but still divides by G: it is the "
            "mean of G - 1 answers, so divide by G - 1.",
            "baseline = (group sum - R_i) / (G - 1).",
            lambda r, g, k: _advantages_with(r, g, k, rloo_divisor=lambda n: n)),
    Mistake("Dr. GRPO divided by the std",
            "Dr. GRPO's advantage is divided by the group's std, like GRPO's; but removing that division "
            "is the point of Dr. GRPO (Liu et al. 2025): it inflates the advantages of groups whose "
            "answers barely differ (prompts too easy or too hard), so those prompts weigh more.",
            "for advantage == 'dr_grpo' return R - group mean, with no division.",
            lambda r, g, k: _advantages_with(r, g, k, dr_grpo_std=True)),
]

def _with_eps(eps, in_root=False):
    return lambda r, g, k: _advantages_with(r, g, k, eps=eps, eps_in_root=in_root)


ADVANTAGE_CONVENTIONS = [
    Convention("another epsilon added to the std (verl's GRPO uses 1e-6; 1e-8 and 1e-9 are common too)",
               "the same as the library's (TRL's 1e-4) unless a group's rewards barely differ (a std below "
               "about 1e-3): a smaller epsilon then blows their differences up further, towards +-1.22 "
               "for a group of 4.",
               _with_eps(1e-6), variants=tuple(_with_eps(e) for e in (1e-8, 1e-9, 1e-5, 1e-3))),
    Convention("epsilon under the square root, (R - mean) / sqrt(var + eps), as whiten does",
               "the same as the library's unless a group's rewards barely differ (a std near sqrt(eps)), "
               "where the two damp them differently; both give 0 when a group's rewards are all equal.",
               _with_eps(1e-4, True), variants=tuple(_with_eps(e, True) for e in (1e-6, 1e-8))),
]

ADVANTAGE_EXERCISE = Exercise(
    function_name="group_advantages",
    reference=grpo.group_advantages,
    reference_name="minirlhf.grpo.group_advantages",
    formula="groups = rewards.view(-1, G); grpo: (R - mean) / (std + 1e-4), std unbiased (G - 1); "
            "dr_grpo: R - mean; rloo: R - (sum - R) / (G - 1); mean, std and sum over each group",
    make_cases=_advantage_cases,
    mistakes=ADVANTAGE_MISTAKES,
    conventions=ADVANTAGE_CONVENTIONS,
    output_names=("advantages",),
    points=3,
)


def check_group_advantages(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``group_advantages(rewards, group_size, advantage) -> (B,)`` against
    :func:`minirlhf.grpo.group_advantages`, and explain any difference."""
    __tracebackhide__ = True
    return run_check(ADVANTAGE_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)


# ---------------------------------------------------------------------------------------------
# Exercise 6b: one advantage per answer, on every one of its tokens


def broadcast_advantages(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Each answer's advantage on its response tokens, 0 elsewhere: ``advantages[:, None]`` times
    :func:`minirlhf.grpo.token_weights` without length normalisation. Shapes (B,), (B, T) -> (B, T).
    (The tests check that :func:`minirlhf.grpo.grpo_loss` weighs the tokens so.)"""
    return advantages[:, None] * grpo.token_weights(response_mask, length_normalise=False)


def _token_case(name, probes, advantages, mask) -> Case:
    return Case(name, probes, {"advantages": torch.tensor(advantages), "response_mask": torch.tensor(mask)})


def _token_cases() -> list[Case]:
    cases = [
        _token_case("two answers, no prompt", "every token of an answer gets the answer's advantage: "
                    "one number per answer, the same on each of its tokens", [1.5, -0.5],
                    [[1, 1, 1], [1, 1, 1]]),
        _token_case("prompt and padding present", "prompt and padding tokens get 0: they are not part "
                    "of the answer, and the policy did not choose them",
                    [2.0, -1.0], [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]),
        _token_case("answers of different lengths", "a long answer's tokens each get the whole "
                    "advantage too (not a share of it); the loss, not the advantage, decides how much "
                    "each token weighs", [1.0, 1.0, -0.5], [[0, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0],
                                                            [0, 1, 0, 0, 0, 0]]),
    ]
    generator = torch.Generator().manual_seed(62)
    for i, (batch, prompt, response) in enumerate([(4, 3, 5), (12, 5, 9)]):
        mask = random_layout(batch, prompt, response, generator)
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response})",
                          "it also agrees on a random batch",
                          {"advantages": torch.randn(batch, generator=generator), "response_mask": mask}))
    return cases


def _on_last_token(a, m):
    out = torch.zeros(m.shape, dtype=a.dtype)
    out[torch.arange(len(a)), last_token_index(m)] = a
    return out


TOKEN_MISTAKES = [
    Mistake("advantages not broadcast over the tokens",
            "the function returns the per-answer advantages as they came, one per answer (shape (B,) "
            "or (B, 1)): the loss needs one per token, (B, T), to multiply the tokens' ratios.",
            "give every position of row i the value advantages[i] (`advantages[:, None]`, shape (B, 1), "
            "broadcasts over T), then multiply by response_mask.",
            lambda a, m: a, variants=(lambda a, m: a[:, None],)),
    Mistake("prompt and padding tokens get the advantage too",
            "the advantage is broadcast over the whole row (`advantages[:, None].expand_as(mask)`), "
            "so the prompt and the padding carry it as well: the loss would then push or pull tokens "
            "the policy never chose.",
            "multiply by response_mask: `advantages[:, None] * response_mask`.",
            lambda a, m: a[:, None].expand(m.shape).clone()),
    Mistake("mask inverted",
            "the advantage lands on the prompt and the padding, and the answer's tokens get 0.",
            "use response_mask as it is: 1 marks the answer's tokens.",
            lambda a, m: a[:, None] * (1 - m)),
    Mistake("advantage only on the last response token",
            "the advantage is put on the `<eos>` alone, as PPO puts the *score* (exercise 3); but a "
            "group-relative advantage already judges the whole answer, and with no critic to spread it "
            "back, every token of the answer must get it.",
            "put advantages[i] on every response token of row i: `advantages[:, None] * response_mask`.",
            _on_last_token),
    Mistake("advantage divided among the tokens",
            "each token gets A / len(y), a share of the advantage: that is GRPO's length normalisation "
            "of the *loss* (`token_weights`), done here too early. Every token's advantage is A itself.",
            "return `advantages[:, None] * response_mask`; leave the weighting by length to the loss.",
            lambda a, m: a[:, None] * m / m.sum(-1, keepdim=True)),
]

TOKEN_EXERCISE = Exercise(
    function_name="token_advantages",
    reference=broadcast_advantages,
    reference_name="minirlhf.grpo.grpo_loss (its advantages on the tokens, masked)",
    formula="token_advantages[b, t] = advantages[b] * response_mask[b, t]",
    make_cases=_token_cases,
    mistakes=TOKEN_MISTAKES,
    output_names=("token_advantages",),
    mask_arg="response_mask",
    points=1,
)


def check_token_advantages(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``token_advantages(advantages, response_mask) -> (B, T)``: each answer's advantage on its
    response tokens, 0 on prompt and padding, as :func:`minirlhf.grpo.grpo_loss` weighs them."""
    __tracebackhide__ = True
    return run_check(TOKEN_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)
