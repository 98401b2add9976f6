"""The KL estimators k1, k2, k3 and best-of-n, exactly by enumeration: on a small categorical
distribution and on the toy world's candidate sets (minirlhf.optimum)."""

import math

import pytest
import torch

from minirlhf import world
from minirlhf.optimum import (ExactEvaluator, best_of_n_kl_formula, best_of_n_probs, kl_divergence,
                              kl_estimator_gradients, kl_estimator_moments, kl_estimator_values,
                              optimal_policy, with_outside)
from minirlhf.rl import kl_estimators

REF = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
PI = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)


def between(ref: torch.Tensor, target: torch.Tensor, t: float) -> torch.Tensor:
    """pi_t ~ ref^(1 - t) target^t: t = 0 is the reference, t = 1 the target."""
    return torch.softmax((1 - t) * ref.log() + t * target.log(), -1)


@pytest.fixture(scope="module")
def france(base):
    """(pi_ref, true reward) on France's candidate set plus the outside outcome, float64."""
    ref, tokenizer = base
    evaluator = ExactEvaluator(ref, tokenizer, [world.make_prompt("France")])
    ref_probs = with_outside(evaluator.ref_set_probs)[0].double()
    return ref_probs / ref_probs.sum(), evaluator.rewards[0].double()  # sums to 1 in float64 too


# ------------------------------------------------------------------------------------------------
# Values, bias and spread
# ------------------------------------------------------------------------------------------------


def test_estimator_values_by_hand_and_as_in_grpo():
    values = kl_estimator_values(PI, REF)
    d = torch.log(REF / PI)  # log(5/2), 0, log(2/5)
    torch.testing.assert_close(values["k1"], -d)
    torch.testing.assert_close(values["k2"], 0.5 * d ** 2)
    torch.testing.assert_close(values["k3"], REF / PI - 1 - d)
    same = kl_estimators(PI.log(), REF.log())
    for name in values:
        torch.testing.assert_close(values[name], same[name])


def test_k1_and_k3_are_unbiased_k2_is_not_by_hand():
    moments = kl_estimator_moments(PI, REF)
    kl = 0.2 * math.log(0.2 / 0.5) + 0.5 * math.log(0.5 / 0.2)
    d = [math.log(0.5 / 0.2), 0.0, math.log(0.2 / 0.5)]
    assert moments["k1"]["exact"] == pytest.approx(kl)
    assert moments["k1"]["bias"] == pytest.approx(0, abs=1e-12)
    assert moments["k3"]["bias"] == pytest.approx(0, abs=1e-12)
    k2_mean = sum(p * 0.5 * x ** 2 for p, x in zip([0.2, 0.3, 0.5], d))
    assert moments["k2"]["mean"] == pytest.approx(k2_mean) and moments["k2"]["bias"] > 0.01
    k1_var = sum(p * (-x - kl) ** 2 for p, x in zip([0.2, 0.3, 0.5], d))
    assert moments["k1"]["std"] == pytest.approx(math.sqrt(k1_var))


@pytest.mark.parametrize("where", ["categorical", "france"])
def test_bias_and_spread_as_pi_moves_away_from_pi_ref(where, request):
    if where == "categorical":
        ref, target = REF, PI
    else:
        ref, rewards = request.getfixturevalue("france")
        target = optimal_policy(ref, rewards, 0.1)
    at_ref = kl_estimator_moments(ref, ref)
    assert all(m["mean"] == 0 and m["std"] == 0 for m in at_ref.values())
    near, far = (kl_estimator_moments(between(ref, target, t), ref) for t in (0.05, 1.0))
    for m in (near, far, kl_estimator_moments(between(ref, target, 0.3), ref)):
        kl = m["k1"]["exact"]
        assert abs(m["k1"]["bias"]) < 1e-9 * max(1, kl) and abs(m["k3"]["bias"]) < 1e-9 * max(1, kl)
    # near pi_ref: k3's spread is far below k1's (O(d^2) against O(d)), k2's bias small
    assert near["k3"]["std"] < 0.3 * near["k1"]["std"]
    assert abs(near["k2"]["bias"]) < 0.1 * near["k1"]["exact"]
    # far from it, k2's bias has grown, and k3's spread has overtaken k1's: answers that pi has
    # nearly dropped but pi_ref keeps give huge pi_ref / pi
    assert abs(far["k2"]["bias"]) > 5 * abs(near["k2"]["bias"]) and abs(far["k2"]["bias"]) > 0.01
    if where == "france":
        assert far["k3"]["std"] > 100 * far["k1"]["std"]


# ------------------------------------------------------------------------------------------------
# Expected gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["categorical", "france"])
def test_which_estimator_gives_the_gradient_of_the_kl(where, request):
    if where == "categorical":
        ref, pi = REF, PI
    else:
        ref, rewards = request.getfixturevalue("france")
        pi = between(ref, optimal_policy(ref, rewards, 0.1), 0.5)
    grads = kl_estimator_gradients(pi.log(), ref)
    exact = grads["exact"]
    assert exact.norm() > 1e-3
    torch.testing.assert_close(grads["k1_loss"], torch.zeros_like(exact))  # E[grad log pi] = 0
    torch.testing.assert_close(grads["k2_loss"], exact)          # in the loss, k2 is right
    torch.testing.assert_close(grads["k1_reward"], exact)        # in the reward, k1 is right (PPO)
    torch.testing.assert_close(grads["k3_loss"], grads["reverse"])  # GRPO: KL(pi_ref || pi)
    assert (grads["k3_loss"] - exact).norm() > 0.05 * exact.norm()
    assert (grads["k3_reward"] - exact).norm() > 0.05 * exact.norm()


def test_every_gradient_vanishes_at_pi_ref():
    grads = kl_estimator_gradients(REF.log(), REF)
    for g in grads.values():
        torch.testing.assert_close(g, torch.zeros(3, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------
# Best-of-n
# ------------------------------------------------------------------------------------------------


def test_best_of_n_by_hand_without_ties():
    p, r = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.0, 1.0, 2.0])
    n = 3
    expected = [0.5 ** n, 0.8 ** n - 0.5 ** n, 1 - 0.8 ** n]
    assert best_of_n_probs(p, r, n).tolist() == pytest.approx(expected)
    torch.testing.assert_close(best_of_n_probs(p, r, 1), p.double())


def test_best_of_n_by_hand_with_ties():
    p, r = torch.tensor([0.5, 0.3, 0.2, 0.0]), torch.tensor([0.0, 1.0, 1.0, 5.0])
    n = 4
    top = 1 - 0.5 ** n  # the best reward drawn is 1 unless all n draws are answer 0
    expected = [0.5 ** n, 0.3 / 0.5 * top, 0.2 / 0.5 * top, 0.0]  # never drawn: never picked
    assert best_of_n_probs(p, r, n).tolist() == pytest.approx(expected)
    # rows are independent (batched over prompts), and the order of the outcomes does not matter
    batched = best_of_n_probs(torch.stack([p, p.flip(0)]), torch.stack([r, r.flip(0)]), n)
    torch.testing.assert_close(batched[1].flip(0), batched[0])
    with pytest.raises(ValueError, match="n must be"):
        best_of_n_probs(p, r, 0)


def test_best_of_n_kl_against_the_formula():
    # many equally likely answers with distinct rewards: close to the continuous case
    K = 4000
    uniform = torch.full((K,), 1.0 / K, dtype=torch.float64)
    for n in (2, 4, 16):
        kl = kl_divergence(best_of_n_probs(uniform, torch.arange(K), n), uniform).item()
        assert kl <= best_of_n_kl_formula(n) + 1e-12
        assert kl == pytest.approx(best_of_n_kl_formula(n), rel=0.02)
    assert best_of_n_kl_formula(1) == 0.0
    # with ties (the toy world's rewards take 5 values) best-of-n only moves mass between reward
    # levels: its KL is at most -log P(the best level) = log 5 here, below the formula's
    tied = kl_divergence(best_of_n_probs(uniform, torch.arange(K) % 5, 16), uniform).item()
    assert tied <= math.log(5) < best_of_n_kl_formula(16)


def test_best_of_n_on_france_agrees_with_monte_carlo(france):
    ref, rewards = france
    n, trials = 4, 40_000
    exact = best_of_n_probs(ref, rewards, n)
    assert exact.sum().item() == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    draws = torch.multinomial(ref.float(), trials * n, replacement=True, generator=generator).view(trials, n)
    picked = draws.gather(1, rewards[draws].argmax(1, keepdim=True)).squeeze(1)  # first of the best
    # frequencies of the likely answers within 4 standard errors
    freq = torch.bincount(picked, minlength=len(ref)).double() / trials
    se = (exact * (1 - exact) / trials).sqrt()
    likely = exact > 0.01
    assert ((freq - exact).abs()[likely] <= 4 * se[likely]).all()
    # the exact KL against its Monte-Carlo estimate: mean of log(P_bon(y) / pi(y)), y ~ best-of-n
    log_ratio = (exact.log() - ref.log())[picked]
    estimate, stderr = log_ratio.mean().item(), (log_ratio.std() / math.sqrt(trials)).item()
    kl = kl_divergence(exact, ref).item()
    assert abs(estimate - kl) <= 3 * stderr
    assert kl < best_of_n_kl_formula(n)


# ------------------------------------------------------------------------------------------------
# What k3 in the loss optimises: the reverse-KL optimum
# ------------------------------------------------------------------------------------------------


def test_reverse_kl_optimum_maximises_its_objective():
    from minirlhf.optimum import reverse_kl_optimum

    rewards = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    beta = 0.5
    best = reverse_kl_optimum(REF, rewards, beta)
    assert best.sum().item() == pytest.approx(1.0)

    def value(pi):
        return (pi * rewards).sum() - beta * kl_divergence(REF, pi)

    generator = torch.Generator().manual_seed(0)
    for _ in range(200):  # no nearby distribution does better
        noise = 0.05 * torch.randn(3, generator=generator, dtype=torch.float64)
        other = torch.softmax(best.log() + noise, -1)
        assert value(other) <= value(best) + 1e-12
    # stationarity: r(y) + beta pi_ref(y) / pi(y) is the same for every y
    stationary = rewards + beta * REF / best
    torch.testing.assert_close(stationary, stationary.mean().expand(3))
    # it keeps more of the worst answer than pi* does, and a large beta gives pi_ref back
    assert best[2] > optimal_policy(REF, rewards, beta)[2]
    torch.testing.assert_close(reverse_kl_optimum(REF, rewards, 1e4), REF, atol=1e-3, rtol=0)


def test_k3_in_the_loss_cannot_reach_pi_star_on_the_toy_world(base):
    from minirlhf.optimum import reverse_kl_optimum

    ref, tokenizer = base
    evaluator = ExactEvaluator(ref, tokenizer, world.prompts("train"))
    ref_probs = with_outside(evaluator.ref_set_probs).double()
    ref_probs = ref_probs / ref_probs.sum(-1, keepdim=True)
    for beta, ceiling in ((0.1, 0.97), (0.5, 0.95)):
        best = reverse_kl_optimum(ref_probs, evaluator.rewards, beta)
        attainment = evaluator.evaluate_probs(best[:, :-1].float(), beta)["attainment"]
        assert 0.9 < attainment < ceiling
