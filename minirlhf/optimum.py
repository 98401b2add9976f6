"""The exact yardstick: pi(y|x), the KL-regularised optimum pi*, J* and the attainment.

On the toy world every prompt has a finite candidate set (every template x every city), and
teacher-forced log-probs give a model's probability of each candidate *exactly*. What the model
puts outside the set (malformed text) is lumped into one more outcome, "outside", which carries
the reward of malformed text, so that leaked probability never flatters a result. (Lumping the
outside texts together can only lower the KL, so the KL we report is a lower bound on the true
one; the set-only figures, renormalised on the candidates, are reported beside it.)

The RLHF objective for one prompt x, and its closed-form maximiser (Rafailov et al. 2023, eq. 4):

    J(pi)      = E_{y ~ pi}[ r(x, y) ] - beta * KL( pi(.|x) || pi_ref(.|x) )
    pi*(y|x)   = pi_ref(y|x) * exp( r(x, y) / beta ) / Z(x),   Z(x) = sum_y pi_ref(y|x) exp(r(x,y)/beta)
    J(pi*)     = beta * log Z(x)                                  (the best any policy can do)

    attainment = (J(pi) - J(pi_ref)) / (J* - J(pi_ref))    (0: no better than the reference, 1: optimal)

Functions on tensors (:func:`optimal_policy`, :func:`optimal_value`, :func:`kl_divergence`,
:func:`objective`) work on any finite distribution; :class:`ExactEvaluator` applies them to models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from minirlhf import world
from minirlhf.logprobs import response_logprobs
from minirlhf.utils import check_positive


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
