"""The exact yardstick: pi(y|x), the KL-regularised optimum pi*, J* and the attainment.

On the toy world every prompt has a finite candidate set (every template x every city), and
teacher-forced log-probs give a model's probability of each candidate *exactly*. What the model
puts outside the set (malformed text) is lumped into one more outcome, "outside", which carries
the reward of malformed text, so that leaked probability never flatters a result. (Lumping the
outside texts together can only lower the KL, so the KL we report is a lower bound on the true
one, and the attainment an upper bound when mass leaks outside; the set-only figures, renormalised
on the candidates, are reported beside it.)

The RLHF objective for one prompt x, and its closed-form maximiser (Rafailov et al. 2023, eq. 4):

    J(pi)      = E_{y ~ pi}[ r(x, y) ] - beta * KL( pi(.|x) || pi_ref(.|x) )
    pi*(y|x)   = pi_ref(y|x) * exp( r(x, y) / beta ) / Z(x),   Z(x) = sum_y pi_ref(y|x) exp(r(x,y)/beta)
    J(pi*)     = beta * log Z(x)                                  (the best any policy can do)

    attainment = (J(pi) - J(pi_ref)) / (J* - J(pi_ref))    (0: no better than the reference, 1: optimal)

Functions on tensors (:func:`optimal_policy`, :func:`optimal_value`, :func:`kl_divergence`,
:func:`objective`) work on any finite distribution; :class:`ExactEvaluator` applies them to models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minirlhf import world
from minirlhf.checks import check_positive
from minirlhf.logprobs import response_logprobs


def _log(p: torch.Tensor) -> torch.Tensor:
    """log p with log 0 = -inf (so that 0 * log 0 terms can be masked)."""
    return torch.log(p.clamp(min=0))


def optimal_policy(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """pi*(y) = pi_ref(y) exp(r(y) / beta) / Z, computed in log space. Shapes (..., K) -> (..., K)."""
    check_positive("beta", beta)
    return torch.softmax(_log(ref_probs) + rewards / beta, dim=-1)


def optimal_value(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """J* = beta * log Z = beta * log sum_y pi_ref(y) exp(r(y) / beta). Shape (..., K) -> (...)."""
    check_positive("beta", beta)
    return beta * torch.logsumexp(_log(ref_probs) + rewards / beta, dim=-1)


def kl_divergence(probs: torch.Tensor, ref_probs: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_y p(y) (log p(y) - log q(y)), with 0 log 0 = 0. Shape (..., K) -> (...)."""
    terms = probs * (_log(probs) - _log(ref_probs))
    return torch.where(probs > 0, terms, torch.zeros_like(terms)).sum(-1)


def objective(probs: torch.Tensor, ref_probs: torch.Tensor, rewards: torch.Tensor,
              beta: float) -> torch.Tensor:
    """J(pi) = E_pi[r] - beta * KL(pi || pi_ref). Shape (..., K) -> (...)."""
    check_positive("beta", beta)
    return (probs * rewards).sum(-1) - beta * kl_divergence(probs, ref_probs)


def with_outside(set_probs: torch.Tensor) -> torch.Tensor:
    """Append the "outside the candidate set" outcome: (..., K) -> (..., K + 1), summing to 1."""
    outside = (1 - set_probs.sum(-1, keepdim=True)).clamp(min=0)
    return torch.cat([set_probs, outside], dim=-1)


def renormalise(set_probs: torch.Tensor) -> torch.Tensor:
    """Probabilities renormalised on the candidate set (the "set-only" view). Shape kept."""
    return set_probs / set_probs.sum(-1, keepdim=True)


@dataclass
class ExactEvaluator:
    """Exact figures of any policy against a fixed reference on the candidate sets of ``prompts``.

    The reference's probabilities and the rewards are computed once, here; each call of
    :meth:`evaluate` then costs one teacher-forced pass of the policy over the candidates.
    ``reward_fn(prompt, response)`` defaults to the toy world's :func:`~minirlhf.world.true_reward`.
    """

    ref_model: torch.nn.Module
    tokenizer: object
    prompts: list[str]
    reward_fn: Callable[[str, str], float] = world.true_reward
    outside_reward: float = world.REWARD_MALFORMED

    def __post_init__(self):
        if not self.prompts:
            raise ValueError("ExactEvaluator needs at least one prompt.")
        self.candidates = [world.candidate_responses(p) for p in self.prompts]
        self.ref_set_probs = self.set_probs(self.ref_model)  # (N, K)
        rewards = torch.tensor([[self.reward_fn(p, y) for y in ys]
                                for p, ys in zip(self.prompts, self.candidates)])
        outside = torch.full((len(self.prompts), 1), float(self.outside_reward))
        self.rewards = torch.cat([rewards, outside], dim=1)  # (N, K + 1)

    def set_probs(self, model) -> torch.Tensor:
        """pi(y|x) of ``model`` on every candidate of every prompt, exact. Shape (N prompts, K)."""
        pairs = [(p, y) for p, ys in zip(self.prompts, self.candidates) for y in ys]
        logp = response_logprobs(model, self.tokenizer, [p for p, _ in pairs], [y for _, y in pairs])
        return logp.exp().view(len(self.prompts), -1)

    def optimum(self, beta: float) -> torch.Tensor:
        """pi* over candidates + outside for each prompt. Shape (N, K + 1)."""
        return optimal_policy(with_outside(self.ref_set_probs), self.rewards, beta)

    def evaluate(self, model, beta: float) -> dict[str, float]:
        """Exact figures of ``model`` at ``beta``, averaged over the prompts.

        Keys: ``attainment``, ``objective`` (J), ``optimal_objective`` (J*), ``reference_objective``,
        ``true_reward`` (E_pi[r]), ``kl`` (KL(pi || pi_ref)), ``coverage`` (mass on the candidate
        set), ``p_correct``, and the set-only ``attainment_set_only``, ``true_reward_set_only``,
        ``kl_set_only``. Attainment is a ratio of the prompt means of J, J* and J(pi_ref).
        """
        return self.evaluate_probs(self.set_probs(model), beta)

    def evaluate_probs(self, set_probs: torch.Tensor, beta: float) -> dict[str, float]:
        """:meth:`evaluate` for given candidate probabilities ``set_probs`` of shape (N, K)."""
        check_positive("beta", beta)
        report = {}
        views = {"": (with_outside(set_probs), with_outside(self.ref_set_probs), self.rewards),
                 "_set_only": (renormalise(set_probs), renormalise(self.ref_set_probs),
                               self.rewards[:, :-1])}
        for suffix, (probs, ref, rewards) in views.items():
            j = objective(probs, ref, rewards, beta).mean()
            j_ref = objective(ref, ref, rewards, beta).mean()
            j_star = optimal_value(ref, rewards, beta).mean()
            report[f"attainment{suffix}"] = ((j - j_ref) / (j_star - j_ref)).item()
            report[f"true_reward{suffix}"] = (probs * rewards).sum(-1).mean().item()
            report[f"kl{suffix}"] = kl_divergence(probs, ref).mean().item()
            if not suffix:
                report.update(objective=j.item(), optimal_objective=j_star.item(),
                              reference_objective=j_ref.item())
        report["coverage"] = set_probs.sum(-1).mean().item()
        report["p_correct"] = set_probs[:, 0].mean().item()  # the correct concise answer is first
        return report


ANSWER_KINDS: tuple[str, ...] = ("correct", "hedge", "wrong", "hedge_wrong", "outside")


def answer_kind_probs(model, tokenizer, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Exact probability of each kind of answer, per prompt: ``{kind: tensor of shape (N,)}``.

    Kinds are ``correct``, ``hedge``, ``wrong``, ``hedge_wrong`` (summed over the candidate set by
    :func:`minirlhf.world.classify_response`) and ``outside`` (1 - coverage: malformed text).
    """
    candidates = [world.candidate_responses(p) for p in prompts]
    pairs = [(p, y) for p, ys in zip(prompts, candidates) for y in ys]
    probs = response_logprobs(model, tokenizer, [p for p, _ in pairs],
                              [y for _, y in pairs]).exp().view(len(prompts), -1)
    kinds = [[world.classify_response(p, y) for y in ys] for p, ys in zip(prompts, candidates)]
    out = {kind: torch.zeros(len(prompts)) for kind in ANSWER_KINDS}
    for i, row in enumerate(kinds):
        for j, kind in enumerate(row):
            out[kind][i] += probs[i, j]
    out["outside"] = (1 - probs.sum(-1)).clamp(min=0)
    return out


# ----------------------------------------------------------------------------------------------
# KL estimators and best-of-n, exactly (on any finite distribution, e.g. a candidate set)
# ----------------------------------------------------------------------------------------------

def kl_estimator_values(probs: torch.Tensor, ref_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-sample KL estimates of every outcome y, as if y were drawn from ``probs`` (K,)::

        d = log pi_ref(y) - log pi(y);   k1 = -d,   k2 = d^2 / 2,   k3 = exp(d) - 1 - d

    (the same formulas as :func:`minirlhf.rl.kl_estimators`). Outcomes with pi(y) = 0 are never
    sampled: their value is 0. Returns ``{"k1", "k2", "k3"}``, each of shape (K,)."""
    d = torch.where(probs > 0, _log(ref_probs) - _log(probs), torch.zeros_like(probs))
    return {"k1": -d, "k2": 0.5 * d ** 2, "k3": torch.expm1(d) - d}


def kl_estimator_moments(probs: torch.Tensor, ref_probs: torch.Tensor) -> dict[str, dict[str, float]]:
    """Exact mean, bias and spread of k1, k2, k3 under y ~ ``probs``, by enumeration (K,)::

        mean = sum_y pi(y) k(y)
        bias = mean - KL(pi || pi_ref)
        std  = sqrt(sum_y pi(y) (k(y) - mean)^2)

    k1 and k3 are unbiased; k2 is biased (by the third and higher cumulants of log(pi/pi_ref));
    k3 >= 0 on every sample and usually has the smallest spread near pi_ref."""
    kl = kl_divergence(probs, ref_probs).item()
    out = {}
    for name, values in kl_estimator_values(probs, ref_probs).items():
        mean = (probs * values).sum()
        std = (probs * (values - mean) ** 2).sum().sqrt()
        out[name] = {"mean": mean.item(), "bias": mean.item() - kl, "std": std.item(), "exact": kl}
    return out


def kl_estimator_gradients(logits: torch.Tensor, ref_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact expected gradients, with respect to the ``logits`` (K,) of pi = softmax(logits), of each
    way of putting a KL estimate into training, next to the gradient of KL(pi || pi_ref) itself.
    Samples y ~ pi carry no gradient (no reparametrisation), as in RL on text::

        "kN_loss"    E_y[ grad kN(y) ]                    the estimate added to the loss (GRPO: k3)
        "kN_reward"  E_y[ kN(y) * grad log pi(y) ]        the estimate subtracted from the reward (PPO: k1)
        "exact"      grad KL(pi || pi_ref);  "reverse"  grad KL(pi_ref || pi)

    Enumeration gives, for any pi: k1_loss = 0, k2_loss = k1_reward = exact, k3_loss = reverse."""
    logits = logits.detach().double().requires_grad_(True)
    ref_probs = ref_probs.double()

    def grad(f) -> torch.Tensor:
        return torch.autograd.grad(f, logits, retain_graph=True)[0]

    logp = torch.log_softmax(logits, -1)
    probs = logp.exp().detach()  # the sampling distribution: no gradient flows through it
    d = _log(ref_probs) - logp
    values = {"k1": -d, "k2": 0.5 * d ** 2, "k3": torch.expm1(d) - d}
    out = {"exact": grad(kl_divergence(logp.exp(), ref_probs)),
           "reverse": grad(kl_divergence(ref_probs, logp.exp()))}
    for name, k in values.items():
        out[f"{name}_loss"] = grad((probs * k).sum())
        out[f"{name}_reward"] = grad((probs * k.detach() * logp).sum())
    return out


def best_of_n_probs(probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Exact answer distribution of best-of-n: draw n answers from ``probs``, keep the highest reward
    (ties: any one of the tied answers, e.g. the first drawn). Shapes (..., K) -> (..., K)::

        F(y)  = P(r(Y) <= r(y)),   F-(y) = P(r(Y) < r(y))          (Y ~ pi, the CDF of the reward)
        P(best reward = r(y))  = F(y)^n - F-(y)^n
        P_bon(y)               = pi(y) / (F(y) - F-(y)) * (F(y)^n - F-(y)^n)

    Among answers of equal reward the winner is distributed as pi restricted to them."""
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}.")
    probs, rewards = torch.broadcast_tensors(probs.double(), rewards.double())
    le = (rewards.unsqueeze(-2) <= rewards.unsqueeze(-1)).double()  # [.., y, y']: r(y') <= r(y)
    lt = (rewards.unsqueeze(-2) < rewards.unsqueeze(-1)).double()
    cdf = (le * probs.unsqueeze(-2)).sum(-1).clamp(max=1)
    below = (lt * probs.unsqueeze(-2)).sum(-1).clamp(max=1)
    tied = cdf - below
    safe = torch.where(tied > 0, tied, torch.ones_like(tied))
    return torch.where(probs > 0, probs / safe * (cdf ** n - below ** n), torch.zeros_like(probs))


def best_of_n_kl_formula(n: int) -> float:
    """The usual closed form of KL(best-of-n || pi): ``log n - (n - 1) / n``. Exact only for a
    continuous reward without ties; on a finite set it is an upper bound (Beirami et al. 2024)."""
    return math.log(n) - (n - 1) / n


def reverse_kl_optimum(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float,
                       iterations: int = 200) -> torch.Tensor:
    """The maximiser of ``E_pi[r] - beta * KL(pi_ref || pi)`` (the *reverse* KL, whose gradient k3 in
    the loss follows), shapes (..., K) -> (..., K). Setting the derivative to zero on the simplex::

        pi(y) = beta * pi_ref(y) / (lambda - r(y)),   lambda > max r chosen so that sum_y pi(y) = 1

    (found by bisection). Unlike pi*, it keeps every answer of pi_ref at a probability that falls only
    like 1 / (reward gap), not exponentially."""
    check_positive("beta", beta)
    ref_probs, rewards = torch.broadcast_tensors(ref_probs.double(), rewards.double())
    low = rewards.max(-1, keepdim=True).values
    high = low + beta  # sum_y beta pi_ref / (lambda - r) <= beta / (lambda - max r) = 1 here
    for _ in range(iterations):
        middle = (low + high) / 2
        too_much = (beta * ref_probs / (middle - rewards)).sum(-1, keepdim=True) > 1
        low, high = torch.where(too_much, middle, low), torch.where(too_much, high, middle)
    probs = beta * ref_probs / (high - rewards)
    return probs / probs.sum(-1, keepdim=True)
