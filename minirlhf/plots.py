"""Matplotlib figures used by the notebooks, the CLI and the docs.

Every function returns a ``matplotlib.figure.Figure`` (and never calls ``plt.show``), so the
same figure can be shown in a notebook or saved by the CLI. Importing it leaves matplotlib's backend
as it is (a notebook keeps its inline one); the CLI, which only writes files, sets Agg. Figures are
kept small.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from minirlhf.world import REWARD_OF_KIND, classify_response

STYLE_COLORS = {"correct": "tab:green", "hedge": "tab:orange", "wrong": "tab:red",
                "hedge_wrong": "tab:purple", "malformed": "tab:gray", "outside": "tab:gray"}


# What each logged metric measures, in words (the TRL name is kept in brackets on the plots).
METRIC_LABELS = {
    "objective/scores": "score of the sampled answers",
    "objective/kl": "KL to the reference (summed k1, nats)",
    "objective/true_reward": "true reward of the samples",
    "exact/true_reward": "true reward (exact)",
    "exact/kl": "KL to the reference (exact, nats)",
    "exact/attainment": "attainment (exact, 1 = pi*)",
    "exact/coverage": "mass on the candidate set",
    "policy/approxkl": "step size: KL old -> new policy",
    "val/explained_variance": "critic: explained variance",
    "loss": "loss", "accuracy": "pair accuracy", "margin": "score margin r_w - r_l",
    "eval/accuracy": "held-out pair accuracy",
    "rewards/margins": "implicit reward margin", "rewards/accuracies": "implicit reward accuracy",
}


def metric_title(key: str) -> str:
    """``"KL to the reference (summed k1, nats)\n[objective/kl]"``: the words first, the logged name."""
    return f"{METRIC_LABELS[key]}\n[{key}]" if key in METRIC_LABELS else key


def plot_history(history: list[dict], keys: list[str], title: str = "", x: str = "step",
                 ncols: int = 3):
    """Training curves: one small panel per logged metric, against the step.

    ``keys``: the metrics, drawn against ``x`` from a list-of-dicts ``history``."""
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, min(ncols, len(keys)), figsize=(3.4 * min(ncols, len(keys)),
                             2.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(h[x], h[key]) for h in history if key in h]
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_title(metric_title(key), fontsize=9)
        ax.set_xlabel(x, fontsize=9)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_answer_kinds(kind_probs: dict, labels: list[str], title: str = "Answer distribution"):
    """Stacked bars: for each prompt (``labels``), the probability of each kind of answer.

    ``kind_probs`` is the output of :func:`minirlhf.optimum.answer_kind_probs`.
    """
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(labels) + 1.5), 3.0))
    bottom = [0.0] * len(labels)
    for kind, probs in kind_probs.items():
        values = [float(v) for v in probs]
        ax.bar(labels, values, bottom=bottom, label=kind, color=STYLE_COLORS.get(kind))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=70, labelsize=9)
    ax.legend(fontsize=9, ncols=len(kind_probs), loc="upper center", bbox_to_anchor=(0.5, -0.45))
    fig.tight_layout()
    return fig


def short_answer_label(response: str) -> str:
    """A short x-axis label for a candidate answer: ``"Paris"`` or ``"hedge: Paris"``."""
    words = response.rstrip(".").split()
    return f"hedge: {words[-5]}" if response.startswith("There") else words[-1]


def label_points(ax, xs, ys, labels, fontsize: int = 9, avoid=()) -> list:
    """Write ``labels`` beside the points ``(xs, ys)`` of ``ax``, each where it overlaps neither
    another label nor a point (of ``xs, ys`` or of ``avoid``, more ``(x, y)`` points) and stays
    inside the axes; returns the texts. Call it once the axes have their final size and limits."""
    fig = ax.figure
    fig.canvas.draw()  # sizes of texts and axes are known only once drawn
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    points = [ax.transData.transform((x, y)) for x, y in list(zip(xs, ys)) + list(avoid)]
    marker = 4.0 * fig.dpi / 72  # half a marker's width, in pixels
    obstacles = [(px - marker, py - marker, px + marker, py + marker) for px, py in points]
    placements = [(5, 4, "left", "bottom"), (5, -4, "left", "top"), (-5, 4, "right", "bottom"),
                  (-5, -4, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
                  (8, 0, "left", "center"), (-8, 0, "right", "center"), (8, 12, "left", "bottom"),
                  (8, -12, "left", "top"), (-8, 12, "right", "bottom"), (-8, -12, "right", "top")]

    def overlap(a, b):
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    texts, taken = [], []
    for x, y, label in zip(xs, ys, labels):
        best = None
        for dx, dy, ha, va in placements:
            text = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=fontsize)
            box = text.get_window_extent(renderer)
            box = (box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1)
            outside = (max(0.0, frame.x0 - box[0]) + max(0.0, box[2] - frame.x1)
                       + max(0.0, frame.y0 - box[1]) + max(0.0, box[3] - frame.y1))
            cost = 1000 * outside + sum(overlap(box, other) for other in taken + obstacles)
            text.remove()
            if best is None or cost < best[0]:
                best = (cost, dx, dy, ha, va, box)
            if cost == 0:
                break
        _, dx, dy, ha, va, box = best
        texts.append(ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha,
                                 va=va, fontsize=fontsize))
        taken.append(box)
    return texts


def plot_distributions(distributions: dict, candidates: list[str], top_k: int = 8,
                       title: str = "", ylim: tuple[float, float] | None = None):
    """Grouped bars of several answer distributions over one prompt's likeliest answers.

    ``distributions`` maps a name (e.g. ``"pi_ref"``, ``"pi*"``) to a (K + 1,) tensor over the
    candidates followed by the outside-the-set outcome. Shows the ``top_k`` answers most likely
    under the first distribution, plus "outside". ``ylim`` fixes the y-axis (e.g. ``(0, 1)``, so
    that figures drawn one after another compare at a glance).
    """
    names = list(distributions)
    first = distributions[names[0]]
    order = sorted(range(len(candidates)), key=lambda i: -float(first[i]))[:top_k]
    labels = [short_answer_label(candidates[i]) for i in order] + ["outside"]
    index = order + [len(candidates)]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    for n, name in enumerate(names):
        values = [float(distributions[name][i]) for i in index]
        ax.bar([i + n * width for i in range(len(index))], values, width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(index))], labels, rotation=30,
                  ha="right", fontsize=9)
    ax.set_ylabel("probability")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


# --- reward model ---------------------------------------------------------------------------------

def plot_learned_vs_true_reward(scores: dict, title: str = "Learned vs true reward"):
    """Scatter of learned against true reward over one prompt's candidate answers.

    ``scores`` is :func:`minirlhf.evaluation.candidate_scores`' output (``learned``, ``true``,
    ``kinds``, and optionally ``seen``). The dashed line has slope 1 through the (seen) points: a
    Bradley-Terry reward fitted to a tau = 1 rater should lie on it, because it recovers the true
    reward up to a constant. With ``seen``, answers the preference data never showed are drawn
    hollow: there the reward model can only extrapolate. Points are spread a little sideways.
    """
    learned, true, kinds = scores["learned"], scores["true"], scores["kinds"]
    seen = scores.get("seen", [1] * len(learned))
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for kind in dict.fromkeys(kinds):
        for was_seen in (True, False):
            idx = [i for i, k in enumerate(kinds) if k == kind and (seen[i] > 0) == was_seen]
            if not idx:
                continue
            color = STYLE_COLORS.get(kind)
            label = f"{kind} ({len(idx)}{'' if was_seen else ', unseen'})"
            ax.scatter([true[i] + 0.06 * ((i * 7) % 5 - 2) for i in idx], [learned[i] for i in idx],
                       s=22, alpha=0.8, label=label, edgecolors=color,
                       facecolors=color if was_seen else "none")
    fitted = [i for i in range(len(learned)) if seen[i] > 0] or range(len(learned))
    offset = sum(learned[i] - true[i] for i in fitted) / len(fitted)  # through the seen points
    low, high = min(true) - 0.2, max(true) + 0.2
    ax.plot([low, high], [low + offset, high + offset], "k--", lw=0.8, label="slope 1")
    ax.set_xlabel("true reward r(x, y)")
    ax.set_ylabel("learned reward r_phi(x, y)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def plot_preference_pairs(data, title: str = "Which kind of answer the rater preferred"):
    """Heat map of preference pairs: rows the kind of the chosen answer, columns the rejected one.

    Kinds run from best to worst, so counts below the diagonal are the rater's "mistakes" (noise):
    with tau = 1 a worse answer wins now and then. ``data`` is a preference Dataset from the toy world.
    """
    kinds = sorted(REWARD_OF_KIND, key=lambda k: -REWARD_OF_KIND[k])
    counts = [[0] * len(kinds) for _ in kinds]
    for prompt, chosen, rejected in zip(data["prompt"], data["chosen"], data["rejected"]):
        counts[kinds.index(classify_response(prompt, chosen))][
            kinds.index(classify_response(prompt, rejected))] += 1
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    image = ax.imshow(counts, cmap="Blues")
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=9,
                    color="white" if count > max(map(max, counts)) / 2 else "black")
    ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right", fontsize=9)
    ax.set_yticks(range(len(kinds)), kinds, fontsize=9)
    ax.set_xlabel("rejected")
    ax.set_ylabel("chosen")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


# --- PPO with a KL penalty ------------------------------------------------------------------------

def plot_ppo_loop():
    """The PPO-with-KL loop as a diagram: rollout -> reward (score + KL) -> GAE -> clipped update."""
    boxes = {  # name: (x, y, text)
        "prompts": (0.08, 0.78, "prompts x"),
        "policy": (0.36, 0.78, "policy pi_theta\nsamples y"),
        "ref": (0.36, 0.35, "reference pi_ref\n(frozen SFT)"),
        "rm": (0.66, 0.78, "score r(x, y)\nreward model or truth"),
        "reward": (0.66, 0.35, "per-token reward\n-beta (log pi - log pi_ref)\n+ score at the EOS"),
        "gae": (0.92, 0.35, "critic V + GAE\nadvantages A_t"),
        "update": (0.92, 0.78, "clipped PPO update\n(epochs x minibatches)"),
    }
    fig, ax = plt.subplots(figsize=(7.5, 3.0))
    ax.set_xlim(-0.05, 1.07)
    ax.set_ylim(0.2, 1.12)
    ax.axis("off")
    for x, y, text in boxes.values():
        ax.add_patch(FancyBboxPatch((x - 0.115, y - 0.1), 0.23, 0.2, boxstyle="round,pad=0.01",
                                    facecolor="#eef3fb", edgecolor="#4a6fa5"))
        ax.text(x, y, text, ha="center", va="center", fontsize=9)
    arrows = [("prompts", "policy"), ("policy", "rm"), ("policy", "ref"), ("ref", "reward"),
              ("rm", "reward"), ("reward", "gae"), ("gae", "update")]
    for a, b in arrows:
        (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
        # start and end on the boxes' edges, not their centres
        sx = 0.12 * ((xb > xa + 1e-6) - (xb < xa - 1e-6))
        sy = 0.1 * ((yb > ya + 1e-6) - (yb < ya - 1e-6))
        start, end = (xa + sx, ya + sy), (xb - sx, yb - sy)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="->", mutation_scale=10, color="#333333"))
    # the update changes the policy: the loop closes
    ax.add_patch(FancyArrowPatch((0.92, 0.89), (0.36, 0.89), connectionstyle="arc3,rad=0.18",
                                 arrowstyle="->", mutation_scale=10, color="tab:red"))
    ax.text(0.64, 1.06, "updated policy, next batch of prompts", ha="center", fontsize=9,
            color="tab:red")
    fig.tight_layout()
    return fig


def plot_clipped_objective(clip_range: float = 0.2):
    """PPO's clipped surrogate ``min(ratio * A, clip(ratio) * A)`` against the ratio, for A = +1 and
    A = -1: the gain stops growing once the ratio leaves [1 - eps, 1 + eps] in the helpful direction."""
    ratio = torch.linspace(0.0, 2.0, 201)
    fig, axes = plt.subplots(1, 2, figsize=(6.0, 2.4), sharey=False)
    for ax, advantage in zip(axes, (1.0, -1.0)):
        clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
        surrogate = torch.minimum(ratio * advantage, clipped * advantage)
        ax.plot(ratio, ratio * advantage, "--", color="gray", label="ratio x A")
        ax.plot(ratio, surrogate, color="tab:blue", label="clipped objective")
        for edge in (1 - clip_range, 1 + clip_range):
            ax.axvline(edge, color="tab:red", lw=0.6, ls=":")
        ax.set_title(f"A = {advantage:+.0f}", fontsize=9)
        ax.set_xlabel("ratio pi / pi_old", fontsize=9)
        ax.tick_params(labelsize=9)
    axes[0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_probability_curves(history: list[dict], series: dict, title: str = "", logy: bool = False,
                            ylabel: str = "probability"):
    """Curves of several answer probabilities (or other metrics) of one run against the PPO step.

    ``series`` maps a label to a history key. The legend sits beside the axes, where it hides no
    point."""
    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    for label, key in series.items():
        points = [(h["step"], h[key]) for h in history if key in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("PPO step", fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_token_kl(tokens: list[str], kl: list[list[float]], labels: list[str] | None = None,
                  title: str = "Per-token KL  log pi - log pi_ref"):
    """Heatmap of the per-token log-ratio log pi(y_t) - log pi_ref(y_t), one row per response.

    One column per token: ``tokens`` are the first row's tokens, or give one list per row as
    ``labels``."""
    width = max(len(row) for row in kl)
    grid = np.full((len(kl), width), np.nan)
    for i, row in enumerate(kl):
        grid[i, :len(row)] = row
    bound = max(1e-3, float(np.nanmax(np.abs(grid))))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * width + 1.5), 0.5 * len(kl) + 1.2))
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(tokens)), tokens, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(len(kl)), labels or [""] * len(kl), fontsize=9)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def plot_beta_sweep(betas: list[float], measured: dict, optimum: dict | None = None,
                    method: str = "PPO", title: str = ""):
    """One method's final metrics against beta (log x axis), one panel per metric.

    ``measured`` maps a metric name (e.g. ``"true reward"``, ``"KL"``) to one value per beta;
    ``optimum`` the same metric for the exact optimum pi* (drawn dashed), if given.
    """
    fig, axes = plt.subplots(1, len(measured), figsize=(3.0 * len(measured), 2.5), squeeze=False)
    for ax, (name, values) in zip(axes.flat, measured.items()):
        ax.plot(betas, values, "o-", label=method)
        if optimum and name in optimum:
            ax.plot(betas, optimum[name], "k--", lw=1, label="exact pi*")
        ax.set_xscale("log")
        ax.set_xlabel("beta", fontsize=9)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=9)
    axes.flat[0].legend(fontsize=9)
    fig.suptitle(title or f"{method} across beta", fontsize=10)
    fig.tight_layout()
    return fig


def plot_frontier(curve: list[dict], points: dict | None = None, title: str = "Reward vs KL",
                  betas: list[float] | None = None):
    """The exact optimal reward-KL curve, with methods' measured points on top.

    ``curve``: from :func:`minirlhf.compare.frontier_curve`. ``points`` maps a method name to a
    list of ``(kl, reward)`` pairs, one per beta of ``betas`` (each point is labelled with its beta,
    unless all have the same: then say it in the title).
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    ax.plot([p["kl"] for p in curve], [p["reward"] for p in curve], color="black",
            label="optimal (pi*_beta)")
    everything = [(k, r) for pairs in (points or {}).values() for k, r in pairs]
    for (name, pairs), marker in zip((points or {}).items(), "osD^v"):
        ax.scatter([k for k, _ in pairs], [r for _, r in pairs], marker=marker, label=name, zorder=3)
    ax.set_xlabel("KL(pi || pi_ref)")
    ax.set_ylabel("expected true reward")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=9)
    label = bool(betas) and len(set(betas)) > 1  # one beta for every point: the title says it
    if label:
        ax.margins(0.08)  # room for the labels
    fig.tight_layout()
    if label:
        labelled = [(k, r, f"{b:g}") for pairs in (points or {}).values() for (k, r), b in zip(pairs, betas)]
        label_points(ax, *zip(*labelled), avoid=everything)
    return fig


def plot_over_optimisation(curve: dict, betas: list[float], best_of_n: dict | None = None,
                           ppo: list[dict] | None = None,
                           title: str = "Over-optimising a learned reward model, on the candidate answers"):
    """Over-optimisation: the learned reward ``r_phi`` (what the policy sees) and the true reward
    against the KL to the reference, for the policies that are best for ``r_phi``.

    ``curve`` holds ``"KL"``, ``"r_phi"`` and ``"true reward"``, one value per beta of ``betas``
    (the exact pi*_phi, each point labelled with its beta); ``best_of_n`` the same keys for
    best-of-n on ``r_phi``; ``ppo`` the records (dicts with the same keys) of a PPO run at beta = 0.
    """
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    panels = (("r_phi", "learned reward r_phi (what PPO sees)"), ("true reward", "true reward"))
    for ax, (key, panel_title) in zip(axes, panels):
        ax.plot(curve["KL"], curve[key], marker="o", label="pi*_phi (best for r_phi)")
        if best_of_n:
            ax.plot(best_of_n["KL"], best_of_n[key], marker="^", color="C2",
                    label="best-of-n on r_phi (n = 1 ... 256)")
        if ppo:
            ax.plot([h["KL"] for h in ppo], [h[key] for h in ppo], "s", color="C3",
                    label="PPO at beta = 0 (every 10 steps)")
        ax.set_xlabel("KL to the reference (nats)", fontsize=9)
        ax.set_title(panel_title, fontsize=9)
        ax.tick_params(labelsize=9)
        ax.margins(x=0.1, y=0.15)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title} (numbers: beta)", fontsize=10)
    fig.tight_layout()
    for ax, (key, _) in zip(axes, panels):
        others = [(x, y) for x, y in zip((best_of_n or {}).get("KL", []), (best_of_n or {}).get(key, []))]
        others += [(h["KL"], h[key]) for h in ppo or []]
        label_points(ax, curve["KL"], curve[key], [f"{b:g}" for b in betas], avoid=others)
    return fig


def plot_labels_paid(rows: list[dict], beta: float | None = None, x: str = "rater_labels",
                     y: str = "attainment"):
    """What each method reached against the rater labels it paid: one labelled point per method.

    ``rows``: dicts with ``"method"``, ``x`` (the labels) and ``y`` (e.g. the attainment on the
    training prompts).
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for row in rows:
        ax.scatter(row[x], row[y], s=40)
    ax.set_xlabel("rater labels")
    ax.set_ylabel("attainment (training prompts)")
    at = f" (beta = {beta:g})" if beta is not None else ""
    ax.set_title(f"What each method reached, and the labels it paid{at}", fontsize=10)
    ax.margins(x=0.12, y=0.12)
    fig.tight_layout()
    label_points(ax, [r[x] for r in rows], [r[y] for r in rows], [r["method"] for r in rows])
    return fig


def plot_margin_calibration(calibration: dict, title: str = "Learned vs true margin (held-out pairs)"):
    """Mean learned margin against true margin, from :func:`minirlhf.evaluation.margin_calibration`.

    Marker area grows with the number of pairs; the dashed diagonal is "learned = true".
    """
    margins = list(calibration)
    learned = [calibration[m]["learned_margin"] for m in margins]
    counts = [calibration[m]["pairs"] for m in margins]
    fig, ax = plt.subplots(figsize=(3.8, 3.2))
    ax.scatter(margins, learned, s=[10 + 200 * c / max(counts) for c in counts], alpha=0.7)
    top = max(max(margins), max(learned)) + 0.3
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlabel("true margin r(x, y_better) - r(x, y_worse)")
    ax.set_ylabel("mean learned margin")
    ax.set_title(title, fontsize=10)
    ax.margins(0.1)
    fig.tight_layout()
    label_points(ax, margins, learned, [f"{c} pairs" for c in counts])
    return fig


# --- DPO ------------------------------------------------------------------------------------------

def plot_runs(histories: dict, keys: list[str], title: str = "", x: str = "step", hlines: dict | None = None):
    """Training curves of several runs on shared axes, one panel per metric and one line per run.

    ``histories`` maps a run's label to its history (a list of dicts); ``hlines`` maps a metric to
    a reference value drawn dashed (e.g. the exact optimum).
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 2.5), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, history in histories.items():
            points = [(h[x], h[key]) for h in history if key in h]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", ms=3, label=label)
        if hlines and key in hlines:
            ax.axhline(hlines[key], color="black", ls="--", lw=1)
        ax.set_title(metric_title(key), fontsize=9)
        ax.set_xlabel(x, fontsize=9)
        ax.tick_params(labelsize=9)
    axes.flat[0].legend(fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_token_log_ratios(rows: list[tuple[str, list[str], list[float]]],
                          title: str = "Per-token log-ratio  log pi - log pi_ref"):
    """Heatmap of per-token log-ratios, one row per response, each cell labelled with its token.

    ``rows``: ``(label, tokens, values)`` per response; rows may have different lengths.
    """
    width = max(len(tokens) for _, tokens, _ in rows)
    grid = np.full((len(rows), width), np.nan)
    for i, (_, _, values) in enumerate(rows):
        grid[i, :len(values)] = values
    bound = max(1e-3, float(np.nanmax(np.abs(grid))))
    fig, ax = plt.subplots(figsize=(min(12.0, 0.75 * width + 2.0), 0.55 * len(rows) + 1.2))
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for i, (_, tokens, values) in enumerate(rows):
        for j, (token, value) in enumerate(zip(tokens, values)):
            ax.text(j, i, f"{token}\n{value:+.2f}", ha="center", va="center", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=9)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def save_figures(figures: dict, outdir) -> list[str]:
    """Save each figure of ``figures`` (file name -> figure) into ``outdir`` as a 100-dpi PNG and
    close it (an open figure keeps its memory); return the sorted file names."""
    for name, fig in figures.items():
        fig.savefig(Path(outdir) / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return sorted(figures)
