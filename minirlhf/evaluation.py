"""Watching and judging a trained model: exact metrics during training, the France answers,
reward-model diagnostics, and the comparison table of the demo. No algorithm lives here.

The trainers take an ``evaluate(step, model) -> dict`` callback; :func:`exact_metrics` builds the
usual one from the exact yardstick of :mod:`minirlhf.optimum`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from datasets import Dataset

from minirlhf import world
from minirlhf.logprobs import response_logprobs
from minirlhf.optimum import (
    ExactEvaluator,
    answer_kind_probs,
    kl_divergence,
    optimal_policy,
    renormalise,
    with_outside,
)
from minirlhf.preferences import bayes_optimal_accuracy
from minirlhf.reward import RewardModel, bradley_terry_loss, evaluate_reward_model, score_preference_pairs

EXACT_KEYS = ("attainment", "true_reward", "kl", "p_correct", "coverage")


# ---------------------------------------------------------------------------------------------
# During training
# ---------------------------------------------------------------------------------------------

def exact_metrics(evaluator: ExactEvaluator, beta: float, held_out: ExactEvaluator | None = None,
                  track: Callable | None = None) -> Callable:
    """An ``evaluate(step, policy) -> dict`` callback for :func:`~minirlhf.ppo.train_ppo` and
    :func:`~minirlhf.dpo.train_dpo`: the exact ``attainment`` (at ``beta``; left out when beta is 0),
    ``true_reward``, ``kl``, ``p_correct`` and ``coverage`` on the evaluator's prompts, as
    ``exact/...``, and on ``held_out``'s as ``exact_held_out/...``; plus what ``track`` returns
    (e.g. :func:`answer_tracker`)."""
    evaluators = {"exact": evaluator, **({"exact_held_out": held_out} if held_out is not None else {})}
    keys = EXACT_KEYS if beta > 0 else EXACT_KEYS[1:]

    def evaluate(step: int, policy) -> dict[str, float]:
        record = {}
        for prefix, ev in evaluators.items():
            report = ev.evaluate(policy, beta if beta > 0 else 1.0)
            record.update({f"{prefix}/{key}": report[key] for key in keys})
        return {**record, **(track(step, policy) if track is not None else {})}

    return evaluate


def answer_tracker(tokenizer, country: str = "France", wrong_city: str = "Berlin") -> Callable:
    """An ``evaluate`` callback for the trainers that records, for ``country``'s prompt, the exact
    probability of the correct answer, of one wrong city, of any hedge, of any wrong city and of
    text outside the candidate set: keys ``P(Paris)``, ``P(Berlin)``, ``P(hedge)``, ``P(wrong)``,
    ``P(outside)`` (with the names of ``country``'s capital and ``wrong_city``)."""
    prompt = world.make_prompt(country)
    capital = world.CAPITAL_OF[country]
    answers = {f"P({capital})": world.make_response(country, "correct"),
               f"P({wrong_city})": world.make_response(country, "wrong", wrong_city)}

    def track(step: int, policy) -> dict[str, float]:
        probs = response_logprobs(policy, tokenizer, [prompt] * len(answers), list(answers.values())).exp()
        kinds = answer_kind_probs(policy, tokenizer, [prompt])
        return {**{label: p.item() for label, p in zip(answers, probs)},
                "P(hedge)": (kinds["hedge"] + kinds["hedge_wrong"]).item(),
                "P(wrong)": kinds["wrong"].item(), "P(outside)": kinds["outside"].item()}

    return track


def candidate_rewards(reward_model: RewardModel, tokenizer, evaluator: ExactEvaluator) -> torch.Tensor:
    """The learned reward ``r_phi`` of every candidate answer of every prompt of ``evaluator``: a
    ``(prompts, candidates)`` tensor, the layout of ``evaluator.rewards`` without its "outside" column."""
    return torch.stack([reward_model.score_texts(tokenizer, [prompt] * len(answers), answers)
                        for prompt, answers in zip(evaluator.prompts, evaluator.candidates)])


def _on_candidates(probs: torch.Tensor, evaluator: ExactEvaluator, learned: torch.Tensor | None) -> dict:
    """KL to pi_ref, true reward (and learned reward) of ``probs``, a distribution over each prompt's
    candidate answers, averaged over the prompts."""
    ref = renormalise(evaluator.ref_set_probs)
    record = {"KL": kl_divergence(probs, ref).mean().item(),
              "true reward": (probs * evaluator.rewards[:, :-1]).sum(-1).mean().item()}
    if learned is not None:
        record["r_phi"] = (probs * learned).sum(-1).mean().item()
    return record


def optimum_curve(evaluator: ExactEvaluator, betas: list[float], learned: torch.Tensor | None = None) -> dict:
    """The exact optimum at each beta: lists ``"KL"`` (to pi_ref) and ``"true reward"``, one value
    per beta, averaged over the evaluator's prompts. Without ``learned``, ``pi*`` for the true reward,
    as :class:`~minirlhf.optimum.ExactEvaluator` measures a policy (the candidates plus "outside").
    With ``learned`` (from :func:`candidate_rewards`), ``pi*_phi ~ pi_ref exp(r_phi / beta)``, the
    optimum for the learned reward, on the candidate answers (pi_ref renormalised there), and its
    ``"r_phi"`` too."""
    if not betas or min(betas) <= 0:
        raise ValueError(f"optimum_curve needs betas > 0, got {betas!r}.")
    if learned is None:
        ref = with_outside(evaluator.ref_set_probs)
        stars = [optimal_policy(ref, evaluator.rewards, beta) for beta in betas]
        return {"KL": [kl_divergence(star, ref).mean().item() for star in stars],
                "true reward": [(star * evaluator.rewards).sum(-1).mean().item() for star in stars]}
    ref = renormalise(evaluator.ref_set_probs)
    rows = [_on_candidates(optimal_policy(ref, learned, beta), evaluator, learned) for beta in betas]
    return {key: [row[key] for row in rows] for key in rows[0]}


def candidate_tracker(evaluator: ExactEvaluator, learned: torch.Tensor | None = None) -> Callable:
    """An ``evaluate(step, policy)`` callback: the policy's ``"KL"`` to pi_ref and ``"true reward"``
    (and ``"r_phi"`` with ``learned``) on the candidate answers, renormalised there, as
    :func:`optimum_curve` computes them for the optimum; plus ``"outside"``, the policy's mass on
    text outside the candidate set, which those numbers leave out."""

    def evaluate(step: int, policy) -> dict[str, float]:
        set_probs = evaluator.set_probs(policy)
        return {**_on_candidates(renormalise(set_probs), evaluator, learned),
                "outside": 1 - set_probs.sum(-1).mean().item()}

    return evaluate


# ---------------------------------------------------------------------------------------------
# The reward model against the truth
# ---------------------------------------------------------------------------------------------

def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two 1-D sequences (ties get their average rank)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape or x.dim() != 1 or len(x) < 2:
        raise ValueError("rank_correlation needs two 1-D sequences of the same length >= 2.")

    def ranks(v):
        order = torch.argsort(v)
        rank = torch.empty_like(v)
        rank[order] = torch.arange(len(v), dtype=v.dtype)
        for value in v.unique():  # average the ranks of tied values
            tied = v == value
            rank[tied] = rank[tied].mean()
        return rank

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return float((rx @ ry).item() / denominator) if denominator > 0 else float("nan")


def ranking_agreement(learned, true) -> float:
    """Fraction of the pairs with *different* true values that ``learned`` orders the same way
    (a tie in ``learned`` counts 1/2). Unlike Spearman's rho it is 1 for any ordering that agrees
    with ``true``, even when ``true`` has ties; Goodman and Kruskal's gamma is ``2 * agreement - 1``."""
    learned, true = torch.as_tensor(learned, dtype=torch.float64), torch.as_tensor(true, dtype=torch.float64)
    better = (true[:, None] - true[None, :]) > 0  # [i, j]: i truly better than j
    if not better.any():
        raise ValueError("ranking_agreement needs at least two different true values.")
    diff = (learned[:, None] - learned[None, :])[better]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def best_rank_correlation(true) -> float:
    """The largest Spearman rho any score *without ties* can reach against ``true``: below 1
    when ``true`` has ties (on the toy world's 48 candidates, 23 answers share -1 and 23 share
    -1.5, so even a perfect reward model gets rho = 0.883)."""
    true = torch.as_tensor(true, dtype=torch.float64)
    return rank_correlation(true + 1e-9 * torch.arange(len(true)), true)


def candidate_ranking_agreement(reward_model: RewardModel, tokenizer, prompts: list[str],
                                set_probs: torch.Tensor | None = None) -> float:
    """Over every prompt's candidate answers (the toy world's 48), the share of answer pairs with
    *different* true reward that the learned reward orders the same way (a tie counts 1/2), pooled
    over the prompts: 1 = the reward model ranks every answer as the truth does.

    ``set_probs`` (N prompts, 48), e.g. ``ExactEvaluator(ref, tokenizer, prompts).ref_set_probs``:
    weigh the pair (y_i, y_j) of a prompt by ``p_i * p_j``, how often two samples of that model are
    that pair. The share then counts the pairs that model's samples show, not every pair alike."""
    shape = (len(prompts), len(world.candidate_responses(prompts[0]))) if prompts else None
    if set_probs is not None and tuple(set_probs.shape) != shape:
        raise ValueError(f"set_probs must have shape {shape} (prompts, candidates), "
                         f"got {tuple(set_probs.shape)}.")
    agree, pairs = 0.0, 0.0
    for n, prompt in enumerate(prompts):
        responses = world.candidate_responses(prompt)
        learned = reward_model.score_texts(tokenizer, [prompt] * len(responses), responses).double()
        true = torch.tensor([world.true_reward(prompt, r) for r in responses], dtype=torch.float64)
        better = (true[:, None] - true[None, :]) > 0  # [i, j]: i truly better than j
        probs = torch.ones_like(true) if set_probs is None else set_probs[n].double()
        weight = probs[:, None] * probs[None, :]
        diff = (learned[:, None] - learned[None, :])[better]
        agree += (weight[better] * ((diff > 0).double() + 0.5 * (diff == 0).double())).sum().item()
        pairs += weight[better].sum().item()
    return agree / pairs


def label_scores(data: Dataset, prompt: str, answers: list[str], l2: float = 0.01) -> list[float]:
    """What the labels alone say: the Bradley-Terry fit of one free score per distinct answer to
    ``prompt``'s rated pairs in ``data`` (no network, nothing shared with other prompts), exactly
    (L-BFGS). A small ``l2`` keeps the score of an answer that never lost finite. Returns the scores
    of ``answers``, NaN for one that no pair shows. A reward model that orders answers as this fit
    does follows its data; where the fit is wrong, the labels are."""
    rows = [(c, r) for p, c, r in zip(data["prompt"], data["chosen"], data["rejected"]) if p == prompt]
    if not rows:
        raise ValueError(f"No rated pair in data for the prompt {prompt!r}.")
    index = {a: i for i, a in enumerate(sorted({a for row in rows for a in row}))}
    scores = torch.zeros(len(index), dtype=torch.float64, requires_grad=True)
    chosen, rejected = (torch.tensor([index[row[k]] for row in rows]) for k in (0, 1))
    optimizer = torch.optim.LBFGS([scores], max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        optimizer.zero_grad()
        loss = len(rows) * bradley_terry_loss(scores[chosen], scores[rejected]) + l2 * scores.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return [scores[index[a]].item() if a in index else float("nan") for a in answers]


def candidate_scores(reward_model: RewardModel, tokenizer, prompt: str, data: Dataset | None = None) -> dict:
    """Learned and true reward of every candidate answer of ``prompt`` (the toy world's 48).

    Returns ``{"responses", "kinds", "learned", "true"}`` (lists of the same length), and with
    preference ``data`` also ``"seen"``: how often each answer appears in the data's pairs for
    ``prompt`` (the reward model knows only what the data show it; elsewhere it extrapolates).
    """
    responses = world.candidate_responses(prompt)
    learned = reward_model.score_texts(tokenizer, [prompt] * len(responses), responses)
    scores = {"responses": responses,
              "kinds": [world.classify_response(prompt, r) for r in responses],
              "learned": learned.tolist(),
              "true": [world.true_reward(prompt, r) for r in responses]}
    if data is not None:
        shown = [y for p, c, r in zip(data["prompt"], data["chosen"], data["rejected"]) if p == prompt
                 for y in (c, r)]
        scores["seen"] = [shown.count(r) for r in responses]
    return scores


def expected_accuracy(reward_model: RewardModel, tokenizer, data: Dataset, rater=None) -> float:
    """Accuracy the model's ranking would get against the rater *on average* over its labels.

    For each pair the rater labels the answer it prefers with probability p; a model that ranks
    it first agrees with probability p, otherwise 1 - p. Free of label noise, so it is the fair
    counterpart of :func:`~minirlhf.preferences.bayes_optimal_accuracy` (same pairs, best = max(p, 1-p)).
    """
    rater = rater or world.SimulatedRater()
    chosen, rejected = score_preference_pairs(reward_model, tokenizer, data)
    total = 0.0
    for i, (prompt, y_w, y_l) in enumerate(zip(data["prompt"], data["chosen"], data["rejected"])):
        p = rater.prob_prefers_first(prompt, y_w, y_l)
        diff = (chosen[i] - rejected[i]).item()
        total += p if diff > 0 else (1 - p) if diff < 0 else 0.5
    return total / len(data)


def margin_calibration(reward_model: RewardModel, tokenizer, data: Dataset) -> dict[float, dict]:
    """Learned against true reward margins on the pairs of ``data`` (with true-reward columns).

    Each pair is oriented so that its first answer has the higher *true* reward (pairs of equal
    true reward are left out); returns, for each true margin ``r(x, y1) - r(x, y2)``, the number of
    pairs and the mean learned margin ``r_phi(x, y1) - r_phi(x, y2)``. With a temperature-1
    Bradley-Terry rater the two should agree: the reward model learns the true reward's *scale*.
    """
    chosen, rejected = score_preference_pairs(reward_model, tokenizer, data)
    groups: dict[float, list[float]] = {}
    for learned_w, learned_l, true_w, true_l in zip(chosen.tolist(), rejected.tolist(),
                                                    data["chosen_reward"], data["rejected_reward"]):
        if true_w == true_l:
            continue
        sign = 1.0 if true_w > true_l else -1.0
        groups.setdefault(abs(true_w - true_l), []).append(sign * (learned_w - learned_l))
    return {margin: {"pairs": len(v), "learned_margin": sum(v) / len(v)}
            for margin, v in sorted(groups.items())}


def reward_model_report(reward_model: RewardModel, tokenizer, data, prompt: str | None = None) -> dict:
    """The numbers the tutorial's targets are about, for a trained reward model and its
    train/test ``data``:

    * ``test_accuracy`` (held-out pairs, against the rater's noisy labels), the rater's
      ``bayes_optimal_accuracy`` on the same pairs and their ``accuracy_ratio``;
    * ``expected_test_accuracy`` and its ratio: the same without label noise (see
      :func:`expected_accuracy`);
    * over the candidate set of ``prompt`` (France by default): Spearman's ``rank_correlation``
      of learned and true reward, the ``best_rank_correlation`` possible there, and the
      ``ranking_agreement`` (pairs of answers ordered as the true reward orders them), also over
      only the candidates that the training pairs show (``ranking_agreement_seen``);
    * the learned reward of the correct, hedging and "Berlin" answers to ``prompt``.
    """
    test = data["test"]
    prompt = prompt or world.make_prompt("France")
    accuracy = evaluate_reward_model(reward_model, tokenizer, test)["accuracy"]
    bayes = bayes_optimal_accuracy(test)
    expected = expected_accuracy(reward_model, tokenizer, test)
    scores = candidate_scores(reward_model, tokenizer, prompt, data["train"])
    seen = [i for i, count in enumerate(scores["seen"]) if count > 0]
    country = world.country_of_prompt(prompt)
    wrong_city = "Berlin" if country != "Germany" else "Paris"
    examples = [world.make_response(country, "correct"), world.make_response(country, "hedge"),
                world.make_response(country, "wrong", wrong_city)]
    correct, hedge, wrong = reward_model.score_texts(tokenizer, [prompt] * 3, examples).tolist()
    return {
        "test_accuracy": accuracy,
        "bayes_optimal_accuracy": bayes,
        "accuracy_ratio": accuracy / bayes,
        "expected_test_accuracy": expected,
        "expected_accuracy_ratio": expected / bayes,
        "rank_correlation": rank_correlation(scores["learned"], scores["true"]),
        "best_rank_correlation": best_rank_correlation(scores["true"]),
        "ranking_agreement": ranking_agreement(scores["learned"], scores["true"]),
        "ranking_agreement_seen": ranking_agreement([scores["learned"][i] for i in seen],
                                                    [scores["true"][i] for i in seen]),
        "n_candidates_seen": len(seen),
        "ranking_agreement_train": candidate_ranking_agreement(reward_model, tokenizer,
                                                               world.prompts("train")),
        "ranking_agreement_held_out": candidate_ranking_agreement(reward_model, tokenizer,
                                                                  world.prompts("held_out")),
        "reward_correct": correct,
        "reward_hedge": hedge,
        f"reward_{wrong_city.lower()}": wrong,
        "n_test_pairs": len(test),
    }


# ---------------------------------------------------------------------------------------------
# Methods side by side
# ---------------------------------------------------------------------------------------------

def comparison_table(policies: dict, ref_model, tokenizer, beta: float,
                     seconds: dict | None = None) -> list[dict]:
    """Exact figures of each policy at ``beta``, on training and held-out prompts, one row each.

    ``policies`` maps a method name to a trained causal LM; ``seconds`` optionally maps it to its
    wall time. Rows: ``method``, ``attainment``, ``attainment_held_out``, ``kl``, ``true_reward``,
    ``coverage``, ``seconds``.
    """
    train = ExactEvaluator(ref_model, tokenizer, world.prompts("train"))
    held_out = ExactEvaluator(ref_model, tokenizer, world.prompts("held_out"))
    rows = []
    for name, policy in {"pi_ref (SFT)": ref_model, **policies}.items():
        report = train.evaluate(policy, beta)
        rows.append({"method": name, "attainment": report["attainment"],
                     "attainment_held_out": held_out.evaluate(policy, beta)["attainment"],
                     "kl": report["kl"], "true_reward": report["true_reward"],
                     "coverage": report["coverage"], "seconds": (seconds or {}).get(name)})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows of :func:`comparison_table` as a Markdown table."""
    lines = ["| method | attainment (train) | attainment (held-out) | KL | true reward | coverage "
             "| seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"| {r['method']} | {r['attainment']:.3f} | {r['attainment_held_out']:.3f} | "
                     f"{r['kl']:.3f} | {r['true_reward']:.3f} | {r['coverage']:.3f} | {seconds} |")
    return "\n".join(lines)
