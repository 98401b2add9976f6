"""Exercises 3 and 4: PPO's per-token reward and GAE; whitening and the clipped policy loss.

The student writes four functions, each checked against :mod:`minirlhf.ppo`:

* ``per_token_rewards(logprobs, ref_logprobs, scores, response_mask, beta)`` -> (B, T):
  ``-beta * (logprobs - ref_logprobs)`` on response tokens, plus the score at the last one;
* ``gae(rewards, values, response_mask, gamma, lam)`` -> ``(advantages, returns)``;
* ``whiten(values, mask, shift_mean=True)`` -> mean 0, variance 1 over the real tokens;
* ``ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range)`` -> the clipped loss
  (a scalar, or ``(loss, stats)`` like the library).
"""

from __future__ import annotations

import torch

from minirlhf import ppo
from minirlhf.exercises.checking import (
    Case,
    Convention,
    Exercise,
    Mistake,
    random_layout,
    random_logprobs,
    run_check,
)
from minirlhf.logprobs import last_token_index

# ---------------------------------------------------------------------------------------------
# Shared helpers for the wrong implementations


def _add_at(rewards: torch.Tensor, index: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    rewards = rewards.clone()
    rewards[torch.arange(len(index)), index] += scores.to(rewards.dtype)
    return rewards


def _first(mask: torch.Tensor) -> torch.Tensor:
    return mask.long().argmax(-1)


def _mean(values, mask):
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum()


# ---------------------------------------------------------------------------------------------
# Exercise 3a: the per-token reward


def _reward_case(name, probes, logprobs, ref_logprobs, scores, mask, beta) -> Case:
    return Case(name, probes, {"logprobs": torch.tensor(logprobs), "ref_logprobs": torch.tensor(ref_logprobs),
                               "scores": torch.tensor(scores), "response_mask": torch.tensor(mask),
                               "beta": beta})


def _reward_cases() -> list[Case]:
    cases = [
        _reward_case("policy equal to the reference",
                     "with no KL, the only reward is the score, on the last response token",
                     [[-3.0, -1.0, -0.5, -0.2]], [[-3.0, -1.0, -0.5, -0.2]], [2.0], [[0, 1, 1, 1]], 0.1),
        _reward_case("policy differs from the reference",
                     "each response token pays -beta * (log pi - log pi_ref), positive where the "
                     "policy is *less* sure than the reference",
                     [[-2.0, -0.5, -1.0, -0.1]], [[-2.5, -1.0, -0.4, -0.1]], [0.0], [[0, 1, 1, 1]], 0.5),
        _reward_case("prompt tokens present",
                     "prompt tokens get no reward, even where the two models disagree on them",
                     [[-4.0, -6.0, -0.3, -0.2]], [[-1.0, -2.0, -0.1, -0.2]], [1.0], [[0, 0, 1, 1]], 0.2),
        _reward_case("padding after a shorter response",
                     "the score goes on each row's own last response token (its EOS), not on the "
                     "last column, and padding gets nothing",
                     [[-1.0, -0.5, -0.2, -3.0, -3.0], [-1.0, -0.4, -0.3, -0.2, -0.1]],
                     [[-1.0, -0.7, -0.2, -1.0, -1.0], [-1.0, -0.2, -0.3, -0.6, -0.1]],
                     [1.5, -1.0], [[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]], 1.0),
    ]
    generator = torch.Generator().manual_seed(3)
    for i, (batch, prompt, response, beta) in enumerate([(3, 3, 5, 0.1), (8, 5, 8, 0.05), (16, 6, 12, 0.3)]):
        mask = random_layout(batch, prompt, response, generator)
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response}, beta={beta})",
                          "it also agrees on a random batch",
                          {"logprobs": random_logprobs(mask.shape, generator),
                           "ref_logprobs": random_logprobs(mask.shape, generator),
                           "scores": 2 * torch.randn(batch, generator=generator),
                           "response_mask": mask, "beta": beta}))
    return cases


def _kl_penalty(lp, ref, mask, beta):
    return -beta * (lp - ref) * mask.to(lp.dtype)


REWARD_MISTAKES = [
    Mistake("KL sign flipped",
            "the penalty is +beta * (log pi - log pi_ref): the policy is *paid* for moving away from "
            "the reference, so nothing holds it back.",
            "r_t = -beta * (logprobs - ref_logprobs) on response tokens.",
            lambda lp, ref, s, m, b: _add_at(-_kl_penalty(lp, ref, m, b), last_token_index(m), s)),
    Mistake("reference log-probs missing",
            "the penalty is -beta * log pi alone, an entropy bonus: the policy is pushed to be unsure, "
            "not to stay near the SFT model.",
            "subtract the reference: -beta * (logprobs - ref_logprobs).",
            lambda lp, ref, s, m, b: _add_at(-b * lp * m, last_token_index(m), s)),
    Mistake("beta divides the KL instead of multiplying it",
            "the penalty is -(log pi - log pi_ref) / beta: a small beta, which should mean a weak pull "
            "to the reference, makes it huge.",
            "multiply: -beta * (logprobs - ref_logprobs).",
            lambda lp, ref, s, m, b: _add_at(-(lp - ref) * m / b, last_token_index(m), s)),
    Mistake("beta multiplies the score too",
            "the whole reward, score included, is scaled by beta, so the score is weighed down with the "
            "KL instead of against it.",
            "only the KL term gets beta: r_t = -beta * KL_t, plus the *unscaled* score at the end.",
            lambda lp, ref, s, m, b: _add_at(_kl_penalty(lp, ref, m, b), last_token_index(m), b * s)),
    Mistake("score on the last column instead of the last response token",
            "with right padding, the last column is padding for every response shorter than the "
            "longest: their score lands where no token was written.",
            "find each row's last response token, e.g. the largest index where response_mask is 1.",
            lambda lp, ref, s, m, b: _add_at(_kl_penalty(lp, ref, m, b),
                                             torch.full((len(s),), m.shape[1] - 1), s)),
    Mistake("last-token index ignores the prompt",
            "the last response token is taken at response_mask.sum(-1) - 1, the response's length minus "
            "one; but the response starts after the prompt, so that index points into the prompt.",
            "take the largest t where response_mask[b, t] is 1 (e.g. (mask * positions).argmax(-1)).",
            lambda lp, ref, s, m, b: _add_at(_kl_penalty(lp, ref, m, b), m.sum(-1) - 1, s)),
    Mistake("score on the token before the EOS",
            "the score goes on the last word, not on the `<eos>`; but the `<eos>` is part of the "
            "response (the model chose to stop there), and the answer is only complete after it.",
            "add the score at the last response token, the `<eos>` itself.",
            lambda lp, ref, s, m, b: _add_at(_kl_penalty(lp, ref, m, b),
                                             (last_token_index(m) - 1).clamp(min=0), s)),
    Mistake("score on the first response token",
            "the score is given when the first token is written, before the model has said anything "
            "worth scoring.",
            "add it at the last response token (the EOS), where the answer is complete.",
            lambda lp, ref, s, m, b: _add_at(_kl_penalty(lp, ref, m, b), _first(m), s)),
    Mistake("score added to every response token",
            "each token gets the whole score, so a long answer collects it many times.",
            "add the score once, at the last response token.",
            lambda lp, ref, s, m, b: _kl_penalty(lp, ref, m, b) + s[:, None] * m),
    Mistake("score missing",
            "only the KL penalty is there: the policy is rewarded for nothing but staying put.",
            "add scores[b] at row b's last response token.",
            lambda lp, ref, s, m, b: _kl_penalty(lp, ref, m, b)),
    Mistake("KL penalty not masked",
            "prompt and padding positions get a KL penalty too, as if the policy had written them.",
            "multiply the penalty by response_mask.",
            lambda lp, ref, s, m, b: _add_at(-b * (lp - ref), last_token_index(m), s)),
    Mistake("k3 estimator instead of k1",
            "the penalty uses (r - 1) - log r with r = pi_ref / pi (the low-variance 'k3' KL estimator); "
            "minirlhf, like TRL's default, uses k1 = log pi - log pi_ref per token.",
            "use -beta * (logprobs - ref_logprobs).",
            lambda lp, ref, s, m, b: _add_at(-b * (torch.expm1(ref - lp) - (ref - lp)) * m,
                                             last_token_index(m), s)),
]

REWARD_EXERCISE = Exercise(
    function_name="per_token_rewards",
    reference=ppo.per_token_rewards,
    reference_name="minirlhf.ppo.per_token_rewards",
    formula="r[b, t] = -beta * (logprobs - ref_logprobs)[b, t] * response_mask[b, t], plus scores[b] "
            "at row b's last response token",
    make_cases=_reward_cases,
    mistakes=REWARD_MISTAKES,
    output_names=("rewards",),
    mask_arg="response_mask",
    points=2,
)


def check_per_token_rewards(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``per_token_rewards(logprobs, ref_logprobs, scores, response_mask, beta) -> (B, T)``
    against :func:`minirlhf.ppo.per_token_rewards`, and explain any difference."""
    __tracebackhide__ = True
    return run_check(REWARD_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)


# ---------------------------------------------------------------------------------------------
# Exercise 3b: generalised advantage estimation


def _gae_case(name, probes, rewards, values, mask, gamma, lam) -> Case:
    return Case(name, probes, {"rewards": torch.tensor(rewards), "values": torch.tensor(values),
                               "response_mask": torch.tensor(mask), "gamma": gamma, "lam": lam})


def _gae_cases() -> list[Case]:
    # The critic outputs numbers everywhere, prompt and padding included (here 5.0 and 9.0): a
    # correct GAE never lets them in.
    cases = [
        _gae_case("one token", "with a single response token, the advantage is r - V and the return is r",
                  [[0.0, 1.0]], [[5.0, 0.25]], [[0, 1]], 1.0, 0.95),
        _gae_case("reward at the end, gamma = 1",
                  "the final reward flows back to earlier tokens, shrunk by lambda at each step",
                  [[0.0, 0.0, 0.0, 1.0]], [[5.0, 0.2, 0.4, 0.6]], [[0, 1, 1, 1]], 1.0, 0.9),
        _gae_case("discounting, gamma < 1", "gamma discounts both the next value and the later "
                  "advantages (the factor is gamma * lambda)",
                  [[0.0, 0.1, -0.2, 2.0]], [[5.0, 0.3, 0.5, 1.0]], [[0, 1, 1, 1]], 0.9, 0.8),
        _gae_case("padding after a shorter response",
                  "the episode ends at the EOS: the value of the padding after it is not bootstrapped, "
                  "and padding gets no advantage",
                  [[0.0, 0.5, 1.0, 0.0, 0.0], [0.0, 0.0, 0.2, -0.1, 1.0]],
                  [[5.0, 0.4, 0.8, 9.0, 9.0], [5.0, 0.1, 0.3, 0.2, 0.6]],
                  [[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]], 0.95, 0.9),
    ]
    generator = torch.Generator().manual_seed(4)
    for i, (batch, prompt, response, gamma, lam) in enumerate([(3, 2, 5, 1.0, 0.95), (8, 4, 8, 0.9, 0.7),
                                                               (16, 5, 12, 0.99, 0.95)]):
        mask = random_layout(batch, prompt, response, generator)
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response}, gamma={gamma}, lam={lam})",
                          "it also agrees on a random batch",
                          {"rewards": 0.3 * torch.randn(mask.shape, generator=generator) * mask,
                           "values": torch.randn(mask.shape, generator=generator),
                           "response_mask": mask, "gamma": gamma, "lam": lam}))
    return cases


def _gae_loop(rewards, values, mask, gamma, lam, *, lam_factor=None, bootstrap_gamma=True,
              mask_next_value=True, mask_advantages=True):
    """A backward GAE loop with switches for the usual slips (all off = the right answer)."""
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    decay = gamma * lam if lam_factor is None else lam_factor
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + (gamma if bootstrap_gamma else 1.0) * next_value - values[:, t]
        advantage = delta + decay * next_advantage
        advantages[:, t] = advantage * mask[:, t] if mask_advantages else advantage
        next_value = values[:, t] * mask[:, t] if mask_next_value else values[:, t]
        next_advantage = advantages[:, t]
    return advantages, advantages + values * mask


def _gae_forward(rewards, values, mask, gamma, lam):
    mask = mask.to(values.dtype)
    T = values.shape[1]
    advantages = torch.zeros_like(values)
    previous = torch.zeros_like(values[:, 0])
    for t in range(T):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(previous)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * previous) * mask[:, t]
        previous = advantages[:, t]
    return advantages, advantages + values * mask


def _rewards_to_go(rewards, values, mask, gamma, lam):
    advantages, _ = _gae_loop(rewards, values, mask, gamma, lam)
    mask = mask.to(values.dtype)
    returns = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return advantages, returns


def _whitened_gae(rewards, values, mask, gamma, lam):
    advantages, returns = _gae_loop(rewards, values, mask, gamma, lam)
    return ppo.whiten(advantages, mask), returns


GAE_MISTAKES = [
    Mistake("lambda ignored: one-step TD",
            "each advantage is just delta_t = r_t + gamma * V_{t+1} - V_t: later rewards reach a token "
            "only through the critic's guess.",
            "accumulate backwards: A_t = delta_t + gamma * lam * A_{t+1}.",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam, lam_factor=0.0)),
    Mistake("lambda ignored: Monte-Carlo",
            "the advantages are accumulated with gamma alone (as if lam = 1): unbiased but noisy, and "
            "not what lam asks for.",
            "the factor between successive deltas is gamma * lam.",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam, lam_factor=g)),
    Mistake("gamma missing from the lambda factor",
            "the advantages are accumulated with lam alone; with gamma < 1 the later deltas weigh too "
            "much.",
            "the factor is gamma * lam.",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam, lam_factor=lam)),
    Mistake("gamma and lambda swapped",
            "lam takes gamma's place and gamma lam's: the product gamma * lam is the same, but the "
            "next value is discounted by lam, delta_t = r_t + lam * V_{t+1} - V_t.",
            "delta_t = r_t + gamma * V_{t+1} - V_t; lambda only appears in the factor gamma * lam "
            "(check the order of the arguments too: gae(rewards, values, response_mask, gamma, lam)).",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, lam, g)),
    Mistake("gamma missing from the bootstrap",
            "delta_t = r_t + V_{t+1} - V_t: the next value is not discounted.",
            "delta_t = r_t + gamma * V_{t+1} - V_t.",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam, bootstrap_gamma=False)),
    Mistake("value after the EOS bootstrapped",
            "the last response token's delta adds gamma times the critic's value of the *padding* "
            "after it: but the episode ended at the EOS, nothing comes after it.",
            "treat the value after the last response token as 0 (multiply the next value by the mask).",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam, mask_next_value=False)),
    Mistake("advantages not masked",
            "prompt and padding positions get advantages (and returns) too, as if the policy had "
            "chosen those tokens.",
            "multiply each advantage by response_mask.",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam, mask_advantages=False, mask_next_value=True)),
    Mistake("loop runs forward",
            "A_t is built from A_{t-1}, so each advantage sums the *past* deltas; credit must flow "
            "from later rewards back to earlier tokens.",
            "loop over t in reversed(range(T)), carrying A_{t+1}.",
            _gae_forward),
    Mistake("returns without the values",
            "the returns equal the advantages: the critic would learn to predict how much better than "
            "itself it was, not the value.",
            "returns = advantages + values.",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam)[:1] * 2),
    Mistake("advantages and returns swapped",
            "the function returns (returns, advantages); the trainer reads the first as the advantages.",
            "return (advantages, returns), in that order.",
            lambda r, v, m, g, lam: _gae_loop(r, v, m, g, lam)[::-1]),
    Mistake("advantages whitened inside gae",
            "the advantages come out normalised; whitening is a separate step (ppo.whiten), done after "
            "the returns are computed from the *raw* advantages.",
            "return the raw advantages; whiten them later, outside gae.",
            _whitened_gae),
]

GAE_CONVENTIONS = [
    Convention("returns as the discounted rewards-to-go, as Spinning Up's PPO trains its critic",
               "the advantages are the same; the critic's target is sum_k gamma^k r_(t+k), not the "
               "lambda-return A + V. The two agree when lam = 1; with lam < 1 the lambda-return leans on "
               "the critic's own estimates (less variance, some bias).",
               _rewards_to_go),
]

GAE_EXERCISE = Exercise(
    function_name="gae",
    reference=ppo.gae,
    reference_name="minirlhf.ppo.gae",
    formula="delta_t = r_t + gamma * V_{t+1} - V_t (V after the last response token = 0); "
            "A_t = delta_t + gamma * lam * A_{t+1}; returns = A + V; zero outside the response",
    make_cases=_gae_cases,
    mistakes=GAE_MISTAKES,
    conventions=GAE_CONVENTIONS,
    output_names=("advantages", "returns"),
    mask_arg="response_mask",
    points=3,
)


def check_gae(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``gae(rewards, values, response_mask, gamma, lam) -> (advantages, returns)`` against
    :func:`minirlhf.ppo.gae`, and explain any difference."""
    __tracebackhide__ = True
    return run_check(GAE_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)


# ---------------------------------------------------------------------------------------------
# Exercise 4a: whitening


def _whiten_cases() -> list[Case]:
    cases = [
        Case("one row, no padding", "the result has mean 0 and variance 1",
             {"values": torch.tensor([[1.0, 2.0, 3.0, 6.0]]), "mask": torch.tensor([[1, 1, 1, 1]]),
              "shift_mean": True}),
        Case("padding present", "the mean and the variance are taken over real tokens only, and "
             "padding comes out as 0",
             {"values": torch.tensor([[0.5, -1.0, 2.0, 40.0], [1.5, 3.0, -50.0, 60.0]]),
              "mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]), "shift_mean": True}),
        Case("shift_mean=False", "only the scale changes: the mean is kept",
             {"values": torch.tensor([[2.0, 4.0, 9.0], [3.0, 5.0, 100.0]]),
              "mask": torch.tensor([[1, 1, 1], [1, 1, 0]]), "shift_mean": False}),
        Case("advantages that barely differ",
             "when the advantages are nearly equal (a spread of about 1e-4, a variance near 1e-8), "
             "the 1e-8 is added to the variance, under the square root: (x - mean) / sqrt(var + 1e-8)",
             {"values": 1e-4 * torch.tensor([[1.0, -2.0, 0.5, 3.0], [2.0, -1.0, 0.0, 0.0]]),
              "mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]), "shift_mean": True}),
        Case("all advantages equal", "when every real token has the same advantage (every answer "
             "scored the same, say), the result is 0, not 0 / 0 = nan: the 1e-8 keeps it defined",
             {"values": torch.tensor([[0.5, 0.5, 0.5], [0.5, 3.0, 3.0]]),
              "mask": torch.tensor([[1, 1, 1], [1, 0, 0]]), "shift_mean": True}),
    ]
    generator = torch.Generator().manual_seed(5)
    for i, (batch, prompt, response) in enumerate([(3, 2, 4), (8, 3, 9)]):
        mask = random_layout(batch, prompt, response, generator)
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response})",
                          "it also agrees on a random batch",
                          {"values": 3 * torch.randn(mask.shape, generator=generator) + 1, "mask": mask,
                           "shift_mean": bool(i % 2)}))
    return cases


def _whiten_with(values, mask, shift_mean, *, var_fn, keep_padding=False, use_mask=True, root=True,
                 subtract=True, eps=1e-8, eps_inside=True, floor=False):
    """The library's whitening, with switches for the usual slips and the accepted conventions
    (defaults = the library's answer). ``floor``: the variance clamped from below at ``eps``."""
    m = mask if use_mask else torch.ones_like(mask)
    mean = _mean(values, m)
    var = var_fn(values, m, mean)
    if not root:
        scale = var + eps
    elif floor:
        scale = var.clamp(min=eps).sqrt()
    elif eps_inside:
        scale = (var + eps).sqrt()
    else:
        scale = var.sqrt() + eps
    out = ((values - mean) if subtract else values) / scale
    if not shift_mean and subtract:
        out = out + mean
    return out if keep_padding else out * mask.to(values.dtype)


def _biased(values, mask, mean):
    return _mean((values - mean) ** 2, mask)


def _unbiased(values, mask, mean):
    n = mask.sum()
    return _biased(values, mask, mean) * n / (n - 1)


WHITEN_MISTAKES = [
    Mistake("advantages not whitened",
            "the values come back as they went in (at most masked): their scale then changes from "
            "batch to batch, and so does the size of every PPO step.",
            "subtract the mean over real tokens and divide by the standard deviation over real tokens.",
            lambda v, m, s: v * m.to(v.dtype)),
    Mistake("statistics include the padding",
            "the mean and the variance are taken over every position, padding included, so they "
            "depend on how much padding the batch happens to have.",
            "compute them over the positions where the mask is 1 only.",
            lambda v, m, s: _whiten_with(v, m, s, var_fn=_biased, use_mask=False),
            variants=(lambda v, m, s: _whiten_with(v, m, s, var_fn=_unbiased, use_mask=False),)),
    Mistake("divided by the variance, not the standard deviation",
            "the values are divided by var instead of sqrt(var), so the result does not have "
            "variance 1.",
            "divide by the square root of the variance.",
            lambda v, m, s: _whiten_with(v, m, s, var_fn=_biased, root=False),
            variants=(lambda v, m, s: _whiten_with(v, m, s, var_fn=_unbiased, root=False),)),
    Mistake("epsilon missing",
            "the values are divided by the bare standard deviation: nearly equal advantages are blown up "
            "to +-1, and exactly equal ones give 0 / 0 = nan.",
            "divide by sqrt(var + 1e-8).",
            lambda v, m, s: _whiten_with(v, m, s, var_fn=_biased, eps=0.0),
            variants=(lambda v, m, s: _whiten_with(v, m, s, var_fn=_unbiased, eps=0.0),)),
    Mistake("mean not subtracted",
            "the values are only scaled: their mean stays where it was.",
            "subtract the mean first (with shift_mean=False, add it back at the end).",
            lambda v, m, s: _whiten_with(v, m, s, var_fn=_biased, subtract=False),
            variants=(lambda v, m, s: _whiten_with(v, m, s, var_fn=_unbiased, subtract=False),)),
    Mistake("shift_mean ignored",
            "with shift_mean=False the mean should come back after scaling; the function always "
            "removes it.",
            "if not shift_mean: add the mean back after dividing by the standard deviation.",
            lambda v, m, s: _whiten_with(v, m, True, var_fn=_biased),
            variants=(lambda v, m, s: _whiten_with(v, m, True, var_fn=_unbiased),)),
    Mistake("padding not zeroed",
            "the padding positions come out with (meaningless) nonzero values.",
            "multiply the result by the mask.",
            lambda v, m, s: _whiten_with(v, m, s, var_fn=_biased, keep_padding=True),
            variants=(lambda v, m, s: _whiten_with(v, m, s, var_fn=_unbiased, keep_padding=True),)),
]

EPSILONS = (1e-8, 1e-6, 1e-5)
"""The epsilons of the whitening conventions accepted (1e-8 is the library's and most libraries')."""


def _whitenings(**switches) -> tuple:
    """One whitening per epsilon of :data:`EPSILONS`, with the given switches."""
    return tuple((lambda v, m, s, e=e: _whiten_with(v, m, s, eps=e, **switches)) for e in EPSILONS)


_STD_PLUS_EPS = (_whitenings(var_fn=_unbiased, eps_inside=False)
                 + _whitenings(var_fn=_biased, eps_inside=False))
_UNBIASED = _whitenings(var_fn=_unbiased) + _whitenings(var_fn=_unbiased, floor=True)
_OTHER_EPS = _whitenings(var_fn=_biased)[1:] + _whitenings(var_fn=_biased, floor=True)

WHITEN_CONVENTIONS = [
    Convention("epsilon added to the standard deviation, (x - mean) / (std + 1e-8), as CleanRL and "
               "Stable-Baselines3 do",
               "the same as the library's (x - mean) / sqrt(var + 1e-8) unless the values are nearly equal "
               "(a variance near 1e-8), where the library's epsilon under the root damps them more; both "
               "give 0 when all are equal. With torch's std, which divides by n - 1 as those libraries' "
               "do, every value is also sqrt((n - 1) / n) times the library's: 13% smaller on 4 real "
               "tokens, under 0.2% on the few hundred real tokens of a PPO batch.",
               _STD_PLUS_EPS[0], variants=_STD_PLUS_EPS[1:]),
    Convention("the unbiased variance, divided by n - 1, as TRL's masked_whiten and torch.var's default",
               "every value is sqrt((n - 1) / n) times the library's (which divides by n): 13% smaller "
               "on 4 real tokens, under 0.2% on the few hundred real tokens of a PPO batch; both whiten.",
               _UNBIASED[0], variants=_UNBIASED[1:]),
    Convention("another epsilon (1e-6 or 1e-5), or the variance floored at epsilon",
               "the same as the library's unless the values are nearly equal (a variance near epsilon), "
               "where a larger epsilon damps them more.",
               _OTHER_EPS[0], variants=_OTHER_EPS[1:]),
]

WHITEN_EXERCISE = Exercise(
    function_name="whiten",
    reference=ppo.whiten,
    reference_name="minirlhf.ppo.whiten",
    formula="(values - mean) / sqrt(var + 1e-8), mean and biased var over positions where mask = 1; "
            "add the mean back if not shift_mean; 0 where mask = 0",
    make_cases=_whiten_cases,
    mistakes=WHITEN_MISTAKES,
    conventions=WHITEN_CONVENTIONS,
    output_names=("whitened",),
    mask_arg="mask",
    points=2,
)


def check_whiten(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``whiten(values, mask, shift_mean=True) -> (B, T)`` against
    :func:`minirlhf.ppo.whiten`, and explain any difference."""
    __tracebackhide__ = True
    return run_check(WHITEN_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)


# ---------------------------------------------------------------------------------------------
# Exercise 4b: the clipped policy loss


def _loss_case(name, probes, logprobs, old_logprobs, advantages, mask, clip_range) -> Case:
    return Case(name, probes, {"logprobs": torch.tensor(logprobs), "old_logprobs": torch.tensor(old_logprobs),
                               "advantages": torch.tensor(advantages), "mask": torch.tensor(mask),
                               "clip_range": clip_range})


def _loss_cases() -> list[Case]:
    cases = [
        _loss_case("policy unchanged", "at ratio 1 the loss is minus the mean advantage",
                   [[-1.0, -0.5, -2.0]], [[-1.0, -0.5, -2.0]], [[1.0, -0.5, 2.0]], [[1, 1, 1]], 0.2),
        _loss_case("small moves, inside the clip range",
                   "inside 1 +- clip_range the loss is -A * ratio, ratio = exp(logprobs - old_logprobs)",
                   [[-0.9, -0.6]], [[-1.0, -0.5]], [[1.0, 1.0]], [[1, 1]], 0.2),
        _loss_case("a good token pushed too far up",
                   "positive advantage, ratio above 1 + clip_range: the gain is capped (clipped)",
                   [[-0.2, -1.0]], [[-1.0, -1.0]], [[2.0, 0.5]], [[1, 1]], 0.2),
        _loss_case("a bad token pushed far up",
                   "negative advantage, ratio above 1 + clip_range: no cap, the loss stays pessimistic "
                   "(the max picks the unclipped term)",
                   [[-0.2, -1.0]], [[-1.0, -1.0]], [[-2.0, 0.5]], [[1, 1]], 0.2),
        _loss_case("a bad token pushed too far down",
                   "negative advantage, ratio below 1 - clip_range: the gain of pushing it further is capped",
                   [[-2.0, -1.0]], [[-1.0, -1.0]], [[-1.0, 0.5]], [[1, 1]], 0.1),
        _loss_case("prompt and padding present", "the mean is over real tokens only",
                   [[-9.0, -0.4, -0.7, -5.0], [-9.0, -1.0, -3.0, -3.0]],
                   [[-1.0, -0.5, -0.5, -1.0], [-1.0, -1.2, -1.0, -1.0]],
                   [[3.0, 1.0, -1.0, 4.0], [3.0, 0.5, 2.0, 2.0]], [[0, 1, 1, 0], [0, 1, 0, 0]], 0.2),
    ]
    generator = torch.Generator().manual_seed(6)
    for i, (batch, prompt, response, clip) in enumerate([(4, 3, 6, 0.2), (16, 5, 10, 0.1)]):
        mask = random_layout(batch, prompt, response, generator)
        old = random_logprobs(mask.shape, generator)
        cases.append(Case(f"random batch {i + 1} ({batch} x {prompt + response}, clip_range={clip})",
                          "it also agrees on a random batch, with moves inside and outside the range",
                          {"logprobs": old + 0.4 * torch.randn(mask.shape, generator=generator),
                           "old_logprobs": old, "advantages": torch.randn(mask.shape, generator=generator),
                           "mask": mask, "clip_range": clip}))
    return cases


def _surrogate(lp, old, adv, clip, *, ratio=None):
    ratio = torch.exp(lp - old) if ratio is None else ratio
    return -adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)


def _clip_other(lp, old, adv, clip, *, clip_product):
    """The max of -A * ratio and a term where the advantage (or the product ratio * A) is clipped
    instead of the ratio."""
    ratio = torch.exp(lp - old)
    if clip_product:
        clipped = -torch.clamp(ratio * adv, 1 - clip, 1 + clip)
    else:
        clipped = -ratio * torch.clamp(adv, 1 - clip, 1 + clip)
    return torch.maximum(-adv * ratio, clipped)


LOSS_MISTAKES = [
    Mistake("min instead of max (an optimistic clip)",
            "the loss takes the *smaller* of the two terms, i.e. the more optimistic objective: the "
            "clip then never stops a harmful step.",
            "as a loss (minus the objective), take the max of -A * ratio and -A * clip(ratio): it is "
            "the min of the objective.",
            lambda lp, old, a, m, c: _mean(torch.minimum(*_surrogate(lp, old, a, c)), m)),
    Mistake("sign flipped (the objective, not the loss)",
            "the function returns the clipped objective min(ratio * A, clip(ratio) * A); minimising it "
            "makes good tokens *less* likely.",
            "return minus the objective: mean of max(-A * ratio, -A * clip(ratio)).",
            lambda lp, old, a, m, c: -_mean(torch.maximum(*_surrogate(lp, old, a, c)), m)),
    Mistake("ratio inverted",
            "the ratio is pi_old / pi = exp(old_logprobs - logprobs): it falls when the policy raises a "
            "token, so the clip and the gradient both point the wrong way.",
            "ratio = exp(logprobs - old_logprobs).",
            lambda lp, old, a, m, c: _mean(torch.maximum(*_surrogate(lp, old, a, c,
                                                                     ratio=torch.exp(old - lp))), m)),
    Mistake("ratio of log-probabilities",
            "the ratio is logprobs / old_logprobs; the ratio of *probabilities* is the exp of the "
            "difference of log-probabilities.",
            "ratio = exp(logprobs - old_logprobs).",
            lambda lp, old, a, m, c: _mean(torch.maximum(*_surrogate(lp, old, a, c, ratio=lp / old)), m)),
    Mistake("log-ratio used as the ratio",
            "the ratio is logprobs - old_logprobs, the *log* of the ratio: it is 0, not 1, when the "
            "policy has not moved, so the loss starts at 0 and the clip range 1 +- clip_range is "
            "compared with the wrong number.",
            "ratio = exp(logprobs - old_logprobs).",
            lambda lp, old, a, m, c: _mean(torch.maximum(*_surrogate(lp, old, a, c, ratio=lp - old)), m)),
    Mistake("advantage clipped instead of the ratio",
            "the clip is applied to the advantage (or to ratio * A), not to the probability ratio: "
            "the clip must bound how far the policy moves, which the ratio measures, whatever the "
            "advantage.",
            "clip the ratio, -A * clamp(ratio, 1 - clip_range, 1 + clip_range), then take the max "
            "with -A * ratio.",
            lambda lp, old, a, m, c: _mean(_clip_other(lp, old, a, c, clip_product=False), m),
            variants=(lambda lp, old, a, m, c: _mean(_clip_other(lp, old, a, c, clip_product=True), m),)),
    Mistake("no clipping",
            "the loss is the plain policy-gradient surrogate -A * ratio: several epochs on one batch "
            "can then move the policy arbitrarily far.",
            "also compute -A * clip(ratio, 1 - clip_range, 1 + clip_range) and take the max.",
            lambda lp, old, a, m, c: _mean(_surrogate(lp, old, a, c)[0], m)),
    Mistake("only the clipped term",
            "the loss is -A * clip(ratio) alone: it has no gradient outside the range even when the "
            "move made things worse, which the max with the unclipped term catches.",
            "take the max of the unclipped and the clipped terms.",
            lambda lp, old, a, m, c: _mean(_surrogate(lp, old, a, c)[1], m)),
    Mistake("mean over every position",
            "the mean includes prompt and padding positions, whose log-probs and advantages mean "
            "nothing.",
            "average over positions where mask is 1: sum(x * mask) / sum(mask).",
            lambda lp, old, a, m, c: torch.maximum(*_surrogate(lp, old, a, c)).mean()),
    Mistake("masked, but divided by every position",
            "the masked terms are averaged with .mean(), which divides by all B x T positions, not by the "
            "number of real tokens.",
            "divide the masked sum by mask.sum().",
            lambda lp, old, a, m, c: (torch.maximum(*_surrogate(lp, old, a, c)) * m).mean()),
    Mistake("sum instead of mean",
            "the loss is summed over tokens, so its size (and the step size) grows with the batch.",
            "average over real tokens: sum(x * mask) / sum(mask).",
            lambda lp, old, a, m, c: (torch.maximum(*_surrogate(lp, old, a, c)) * m).sum()),
]


def _per_sequence_mean(lp, old, a, m, c):
    losses = torch.maximum(*_surrogate(lp, old, a, c)) * m
    return (losses.sum(-1) / m.sum(-1)).mean()


LOSS_CONVENTIONS = [
    Convention("the mean of each response's token mean, as OpenRLHF's policy loss (and verl's "
               "'seq-mean-token-mean') takes it",
               "the same as the library's mean over every real token of the batch when the responses are "
               "equally long; otherwise each response weighs the same, so a token of a short response "
               "weighs more than one of a long response.",
               _per_sequence_mean),
]

LOSS_EXERCISE = Exercise(
    function_name="ppo_policy_loss",
    reference=ppo.ppo_policy_loss,
    reference_name="minirlhf.ppo.ppo_policy_loss",
    formula="ratio = exp(logprobs - old_logprobs); loss = masked mean of max(-A * ratio, "
            "-A * clip(ratio, 1 - clip_range, 1 + clip_range))",
    make_cases=_loss_cases,
    mistakes=LOSS_MISTAKES,
    conventions=LOSS_CONVENTIONS,
    output_names=("loss",),
    grad_args=("logprobs",),
    mask_arg="mask",
    points=3,
)


def check_ppo_policy_loss(student_fn, verbose: bool = True, raise_on_failure: bool = True):
    """Check ``ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range)`` (returning
    the loss, or ``(loss, stats)``) against :func:`minirlhf.ppo.ppo_policy_loss`."""
    __tracebackhide__ = True
    return run_check(LOSS_EXERCISE, student_fn, verbose=verbose, raise_on_failure=raise_on_failure)
