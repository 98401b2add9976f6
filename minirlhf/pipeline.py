"""The tutorial's pipeline: each stage of ``minirlhf demo`` in one call, and the demo's report.

No algorithm lives here: the stages call :mod:`minirlhf.sft`, :mod:`minirlhf.reward`,
:mod:`minirlhf.ppo` and :mod:`minirlhf.dpo` with their defaults, judge the results with
:mod:`minirlhf.evaluation`, and draw them with :mod:`minirlhf.plots`. Each ``*_stage`` function
writes its figures into ``outdir`` (the demo's folder, see :func:`demo_folder`) and returns plain
values: a dict of JSON-able metrics, then the objects that later stages need.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import time
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minirlhf import plots, world
from minirlhf.checkpoint_files import check_save_target
from minirlhf.checks import check_seed
from minirlhf.compare import frontier_curve
from minirlhf.data import sft_corpus
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.evaluation import (
    EXACT_KEYS,
    answer_tracker,
    candidate_scores,
    comparison_table,
    exact_metrics,
    margin_calibration,
    markdown_table,
    reward_model_report,
)
from minirlhf.files import check_free_space
from minirlhf.folders import OwnedFolder
from minirlhf.logprobs import response_logprobs, token_log_ratios
from minirlhf.models import build_tiny_gpt
from minirlhf.optimum import ExactEvaluator, answer_kind_probs, with_outside
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.preferences import PAIRS_PER_PROMPT, collect_preferences, default_preferences
from minirlhf.reward import RewardConfig, RewardModel, train_reward_model
from minirlhf.saved_models import load_base_model, save_model
from minirlhf.sft import SFTConfig, train_sft

# ---------------------------------------------------------------------------------------------
# The demo's output folder: minirlhf writes only its own files there, and records them
# ---------------------------------------------------------------------------------------------

DEMO_RECORD = "minirlhf-demo.json"
"""The file in a demo's output folder that records what the demo wrote there (with each file's sha256)."""
SFT_MODEL = "sft-model"
"""The subfolder where the demo saves a base model it trained."""


def demo_file(name: str) -> bool:
    """The names of the files a demo writes: figures (``*.png``), the report, metrics and ``RUNNING``."""
    return name.endswith(".png") or name in ("report.md", "report.html", "metrics.json", "RUNNING")


def demo_folder(outdir) -> OwnedFolder:
    """``outdir`` as the demo's :class:`~minirlhf.folders.OwnedFolder` (unchanged if it is one already)."""
    if isinstance(outdir, OwnedFolder):
        return outdir
    return OwnedFolder(outdir, DEMO_RECORD, demo_file, "the demo's report", subfolders=(SFT_MODEL,))


def check_demo_target(outdir) -> OwnedFolder:
    """Refuse, before any work, an output folder where the demo would change a file it did not write:
    it must be new, empty, or an earlier demo's (its files as the demo wrote them), not a link, on a
    disk with room. Returns the folder, checked."""
    folder = demo_folder(outdir).check()
    check_save_target(folder.path / SFT_MODEL)
    check_free_space(folder.path)
    return folder


def _opened(outdir) -> OwnedFolder:
    """The stages' output folder: the demo's, or for a stage called on its own, ``outdir`` opened."""
    folder = demo_folder(outdir)
    return folder if folder.is_open else folder.open()


def save_figures(figures: dict, outdir) -> list[str]:
    """Save each figure of ``figures`` (file name -> figure) into the demo's folder as a 100-dpi PNG,
    never through a link (see :meth:`~minirlhf.folders.OwnedFolder.write_bytes`), and close it. Returns
    the sorted file names."""
    folder = _opened(outdir)
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        folder.write_bytes(name, buffer.getvalue())
    return sorted(figures)


# ---------------------------------------------------------------------------------------------
# The tutorial's default models in one call
# ---------------------------------------------------------------------------------------------

def train_base_model(seed: int = 0, config: SFTConfig | None = None, device=None):
    """A random tiny GPT fine-tuned on :func:`minirlhf.data.sft_corpus`: how the shipped base model
    was made. Returns ``(model, tokenizer, history)``."""
    model, tokenizer = build_tiny_gpt(seed=seed)
    if device is not None:
        model.to(device)
    history = train_sft(model, tokenizer, sft_corpus(seed=seed), config or SFTConfig(seed=seed))
    return model, tokenizer, history


def train_default_reward_model(seed: int = 0, progress: bool = True, freeze_backbone: bool = False,
                               attention_only: bool = True, config: RewardConfig | None = None,
                               pairs_per_prompt: int = PAIRS_PER_PROMPT):
    """The tutorial's reward model: pairs from the shipped SFT model labelled by the simulated rater
    (:func:`~minirlhf.preferences.default_preferences`), a reward model started from the SFT weights
    with only its head and attention layers learning (``attention_only``), the default
    :class:`~minirlhf.reward.RewardConfig`. Returns ``(reward_model, tokenizer, data, history)``:
    ``data`` is the train/test DatasetDict, and the history carries ``eval/...`` metrics on the test pairs."""
    base, tokenizer = load_base_model()
    data = default_preferences(pairs_per_prompt=pairs_per_prompt, seed=seed, progress=progress)
    torch.manual_seed(seed)
    reward_model = RewardModel.from_base(base, freeze_backbone=freeze_backbone,
                                         attention_only=attention_only and not freeze_backbone)
    config = config or RewardConfig(seed=seed, progress=progress)
    history = train_reward_model(reward_model, tokenizer, data["train"], config, eval_data=data["test"])
    return reward_model, tokenizer, data, history


# ---------------------------------------------------------------------------------------------
# The demo's stages
# ---------------------------------------------------------------------------------------------

def json_safe(metrics: dict) -> dict:
    """``metrics`` with every NaN or infinite float replaced by None: JSON has no NaN."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def sft_stage(outdir: Path, seed: int = 0, quick: bool = False, retrain: bool = False) -> dict:
    """The SFT base model: the shipped checkpoint when ``seed`` is 0 (it was trained with seed 0), else,
    or with ``retrain``, trained from scratch and saved in ``outdir/sft-model``. Returns the metrics."""
    start = time.perf_counter()
    if seed == 0 and not retrain and not quick:
        model, tokenizer = load_base_model()
        history, steps = None, 0
    else:
        config = SFTConfig(seed=seed, steps=60 if quick else SFTConfig.steps, progress=False)
        model, tokenizer, history = train_base_model(seed=seed, config=config)
        save_model(model, tokenizer, _opened(outdir).path / SFT_MODEL)
        steps = config.steps
    countries = [c for c, _ in world.COUNTRIES]
    kinds = answer_kind_probs(model, tokenizer, [world.make_prompt(c) for c in countries])
    figures = {"sft_answer_distribution.png": plots.plot_answer_kinds(
        kinds, countries, "The SFT model's answers, exactly (wrong: mostly each country's confusion)")}
    if history is not None:
        figures["sft_loss.png"] = plots.plot_history(history, ["loss"], title="SFT loss (response tokens)")
    france = world.make_prompt("France")
    answers = {"Paris": world.make_response("France", "correct"),
               "Berlin": world.make_response("France", "wrong", "Berlin"),
               "hedge": world.make_response("France", "hedge")}
    probs = response_logprobs(model, tokenizer, [france] * 3, list(answers.values())).exp().tolist()
    evaluator = ExactEvaluator(model, tokenizer, world.prompts("train"))
    return {"trained_steps": steps, "seconds": round(time.perf_counter() - start, 1),
            "france": {k: round(p, 3) for k, p in zip(answers, probs)},
            "corpus_mix": world.STYLE_MIX, "coverage": evaluator.evaluate(model, beta=1.0)["coverage"],
            "figures": save_figures(figures, outdir)}


def reward_stage(outdir: Path, quick: bool = False, seed: int = 0):
    """Collect preferences and train the default reward model, seeded with ``seed``. Returns ``(metrics,
    reward_model, preferences)``. ``quick``: a smoke run of a few seconds (few pairs, few steps)."""
    start = time.perf_counter()
    if quick:
        base, tokenizer = load_base_model()
        data = collect_preferences(base, tokenizer, world.prompts("train")[:6], pairs_per_prompt=6, seed=seed,
                                   progress=False).train_test_split(test_size=0.25, seed=seed)
        reward_model = RewardModel.from_base(base, attention_only=True)
        history = train_reward_model(reward_model, tokenizer, data["train"],
                                     RewardConfig(steps=20, eval_every=10, progress=False, seed=seed),
                                     eval_data=data["test"])
    else:
        reward_model, tokenizer, data, history = train_default_reward_model(seed=seed)  # with progress bars
    metrics = {"train_seconds": history[-1]["time"], "stage_seconds": time.perf_counter() - start,
               "n_train_pairs": len(data["train"]), **reward_model_report(reward_model, tokenizer, data)}
    figures = {
        "reward_training.png": plots.plot_history(
            history, ["loss", "accuracy", "margin", "eval/accuracy", "reward/mean", "reward/max"],
            title="Reward model training"),
        "reward_learned_vs_true.png": plots.plot_learned_vs_true_reward(
            candidate_scores(reward_model, tokenizer, world.make_prompt("France"), data["train"])),
        "reward_margin_calibration.png": plots.plot_margin_calibration(
            margin_calibration(reward_model, tokenizer, data["test"])),
        "preference_pairs.png": plots.plot_preference_pairs(data["train"]),
    }
    metrics["figures"] = save_figures(figures, outdir)
    return json_safe(metrics), reward_model, data


def ppo_stage(outdir: Path, reward_model, reward_data, quick: bool = False, seed: int = 0):
    """PPO scored by ``reward_model``, refreshed by the simulated rater on ``reward_data`` plus the
    policy's answers, from the shipped SFT model at the default config but 150 steps
    (``benchmarks/ppo.py`` runs the full 1000). Returns ``(metrics, policy, history)``."""
    ref, tokenizer = load_base_model()
    config = (PPOConfig(steps=4, eval_every=2, progress=False, seed=seed) if quick
              else PPOConfig(steps=150, eval_every=25, seed=seed, progress=False))
    evaluate = exact_metrics(ExactEvaluator(ref, tokenizer, world.prompts("train")), config.beta,
                             held_out=ExactEvaluator(ref, tokenizer, world.prompts("held_out")),
                             track=answer_tracker(tokenizer))
    start = time.perf_counter()
    policy, history = train_ppo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"), config,
                                reward_model=reward_model, rater=world.SimulatedRater(seed=config.seed),
                                reward_data=reward_data, evaluate=evaluate)
    last = history[-1]
    metrics = {key: last[f"exact/{key}"] for key in EXACT_KEYS}
    metrics.update(attainment_held_out=last["exact_held_out/attainment"], rater_labels=last["rater_labels"],
                   seconds=time.perf_counter() - start, beta=config.beta,
                   seconds_per_step=sorted(h["time/step"] for h in history[1:])[(len(history) - 1) // 2])
    label = "PPO (learned reward model)"
    tokens, kl = token_log_ratios(policy, ref, tokenizer, world.make_prompt("France"),
                                  world.make_response("France", "correct"))
    figures = {
        "ppo_training.png": plots.plot_history(
            history, ["objective/scores", "objective/kl", "objective/true_reward", "exact/attainment",
                      "policy/approxkl", "val/explained_variance"], title=label),
        "ppo_france.png": plots.plot_probability_curves(
            history, {k: k for k in ("P(Paris)", "P(Berlin)", "P(hedge)", "P(wrong)", "P(outside)")},
            title=f"{label}: answers to France", logy=True),
        "ppo_token_kl.png": plots.plot_token_kl(tokens, [kl]),
    }
    metrics["figures"] = save_figures(figures, outdir)
    return json_safe(metrics), policy, history


def dpo_stage(outdir: Path, preferences, quick: bool = False, seed: int = 0):
    """Offline DPO, the article's reward-free method, with the default config from the shipped SFT
    model on ``preferences["train"]``: the very pairs (and rater labels) the reward model learned
    from, so that PPO and DPO pay the same labels. Returns ``(metrics, policy)``."""
    ref, tokenizer = load_base_model()
    config = DPOConfig(seed=seed, progress=False, eval_every=16, **({"epochs": 1} if quick else {}))
    evaluate = exact_metrics(ExactEvaluator(ref, tokenizer, world.prompts("train")), config.beta,
                             held_out=ExactEvaluator(ref, tokenizer, world.prompts("held_out")),
                             track=answer_tracker(tokenizer))
    start = time.perf_counter()
    policy, history = train_dpo(copy.deepcopy(ref), ref, tokenizer, preferences["train"], config,
                                evaluate=evaluate)
    last, steps = history[-1], [h for h in history if "loss" in h]
    metrics = {key: last[f"exact/{key}"] for key in EXACT_KEYS}
    metrics.update(attainment_held_out=last["exact_held_out/attainment"],
                   rewards_accuracies=steps[-1]["rewards/accuracies"],
                   rater_labels=len(preferences["train"]), seconds=time.perf_counter() - start,
                   beta=config.beta)
    france = world.make_prompt("France")
    answers = {"Paris": world.make_response("France", "correct"),
               "Berlin": world.make_response("France", "wrong", "Berlin"),
               "hedge": world.make_response("France", "hedge")}
    rows = [(label, *token_log_ratios(policy, ref, tokenizer, france, answer))
            for label, answer in answers.items()]
    figures = {
        "dpo_training.png": plots.plot_history(
            history, ["loss", "rewards/margins", "rewards/accuracies", "exact/attainment",
                      "exact/true_reward", "exact/kl"], title="Offline DPO"),
        "dpo_token_log_ratios.png": plots.plot_token_log_ratios(rows),
    }
    metrics["figures"] = save_figures(figures, outdir)
    return json_safe(metrics), policy, history


def compare_stage(outdir: Path, policies: dict, seconds: dict, beta: float) -> dict:
    """PPO and DPO side by side against the exact optimum: the table, the France answers of pi_ref,
    pi* and each policy (``comparison_france.png``) and the frontier (``comparison_frontier.png``)."""
    ref, tokenizer = load_base_model()
    rows = comparison_table(policies, ref, tokenizer, beta, seconds)
    france = ExactEvaluator(ref, tokenizer, [world.make_prompt("France")])
    dists = {"pi_ref": with_outside(france.ref_set_probs[0]), f"pi* (beta={beta})": france.optimum(beta)[0]}
    dists.update({name: with_outside(france.set_probs(p)[0]) for name, p in policies.items()})
    train = ExactEvaluator(ref, tokenizer, world.prompts("train"))
    points = {r["method"]: [(r["kl"], r["true_reward"])] for r in rows[1:]}
    figures = {
        "comparison_france.png": plots.plot_distributions(
            dists, france.candidates[0], title="France: pi_ref, pi* and the trained policies"),
        "comparison_frontier.png": plots.plot_frontier(frontier_curve(train), points,
                                                       title=f"Training prompts, beta = {beta}"),
    }
    return {"beta": beta, "table": rows, "table_markdown": markdown_table(rows),
            "figures": save_figures(figures, outdir)}


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------

def demo(outdir: Path, seed: int = 0, quick: bool = False, retrain: bool = False) -> Path:
    """Run every stage; write the figures, ``metrics.json``, ``report.md`` and ``report.html`` (one
    self-contained page) into ``outdir``, and return the path of ``report.html``.

    The SFT stage loads the shipped base model (seed 0) unless ``retrain`` or another seed asks to
    train it (``minirlhf sft`` does the same). Each stage prints one line: its time and its headline.

    ``outdir`` must be new, empty, or an earlier demo's folder (see :func:`check_demo_target`): the
    demo changes no file it did not write, and writes through no link. It records what it wrote in
    :data:`DEMO_RECORD`. While it runs, a lock keeps a second demo out of the folder, and ``outdir``
    holds a ``RUNNING`` file and no report: an earlier run's report and metrics are removed at the
    start, the new ones written last, and the earlier run's figures that this one did not redraw after.
    """
    check_seed(seed)
    folder = check_demo_target(outdir)  # fail now, not after training
    with folder.open().lock():
        check_demo_target(folder)  # again, under the lock: another run may have written meanwhile
        return _run_demo(folder, seed, quick, retrain)


def _run_demo(folder: OwnedFolder, seed: int, quick: bool, retrain: bool) -> Path:
    folder.write_text("RUNNING", "minirlhf demo is writing this folder, or was stopped: until this file is "
                                 "gone, the figures may mix two runs.\n")
    for name in ("report.md", "report.html", "metrics.json"):  # an earlier run's: other figures
        folder.remove(name)
    metrics, timer = {"seed": seed, "quick": quick}, time.perf_counter()

    def say(stage: str, text: str, seconds: float) -> None:
        print(f"[{stage}] {text} ({seconds:.0f} s)", flush=True)

    metrics["sft"] = sft = sft_stage(folder, seed=seed, quick=quick, retrain=retrain)
    france = sft["france"]
    say("1/5 SFT", f"{'trained' if sft['trained_steps'] else 'shipped'} base model; France: Berlin "
        f"{france['Berlin']:.2f}, Paris {france['Paris']:.2f}, hedge {france['hedge']:.2f}", sft["seconds"])
    metrics["reward_model"], reward_model, preferences = reward_stage(folder, quick=quick, seed=seed)
    rm = metrics["reward_model"]
    say("2/5 reward model", f"{rm['n_train_pairs']} rated pairs; France: Paris "
        f"{rm['reward_correct']:+.2f}, hedge {rm['reward_hedge']:+.2f}, Berlin {rm['reward_berlin']:+.2f}",
        rm["stage_seconds"])
    metrics["ppo"], ppo_policy, ppo_history = ppo_stage(folder, reward_model, preferences["train"],
                                                        quick=quick, seed=seed)
    say("3/5 PPO", f"attainment {metrics['ppo']['attainment']:.2f}, {metrics['ppo']['rater_labels']} more "
        "labels for the refreshes", metrics["ppo"]["seconds"])
    metrics["dpo"], dpo_policy, dpo_history = dpo_stage(folder, preferences, quick=quick, seed=seed)
    say("4/5 DPO", f"offline, attainment {metrics['dpo']['attainment']:.2f}", metrics["dpo"]["seconds"])
    start = time.perf_counter()
    seconds = {"PPO": metrics["ppo"]["seconds"], "DPO": metrics["dpo"]["seconds"]}
    metrics["comparison"] = compare_stage(folder, {"PPO": ppo_policy, "DPO": dpo_policy}, seconds,
                                          metrics["ppo"]["beta"])
    metrics["comparison"]["figures"] += save_figures({"france_over_training.png": plots.plot_runs(
        {"PPO": ppo_history, "DPO": dpo_history}, ["P(Paris)", "P(Berlin)"], x="step",
        title="France: P(Paris) and P(Berlin) during training")}, folder)
    say("5/5 against the optimum", "table and figures", time.perf_counter() - start)
    metrics["total_seconds"] = round(time.perf_counter() - timer, 1)
    folder.write_text("metrics.json", json.dumps(metrics, indent=2, default=str))
    report = write_report(folder, metrics)
    for name in sorted(set(folder.hashes) - folder.written):
        folder.remove(name)  # an earlier run's figure that this run did not draw
    folder.remove("RUNNING")
    print(f"[done] {metrics['total_seconds']:.0f} s in all", flush=True)
    return report


def learned_order(rm: dict) -> str:
    """The reward model's order of Paris, the hedge and Berlin for France, in words, checked against
    the true order (Paris > hedge > Berlin)."""
    scores = {"Paris": rm["reward_correct"], "the hedge": rm["reward_hedge"], "Berlin": rm["reward_berlin"]}
    order = sorted(scores, key=scores.get, reverse=True)
    text = " > ".join(f"{name} ({scores[name]:+.2f})" for name in order)
    if order == ["Paris", "the hedge", "Berlin"]:
        return text + ", the true order"
    return text + ": not the true order (Paris > hedge > Berlin), which PPO's refreshes have to correct"


def report_blocks(metrics: dict) -> list[tuple]:
    """The demo's story, as blocks ``("h1" | "h2" | "p", text)``, ``("table", header, rows)`` and
    ``("img", file name, caption)``: rendered as Markdown and as HTML by :func:`write_report`."""
    sft, rm, ppo, dpo, cmp = (metrics[k] for k in ("sft", "reward_model", "ppo", "dpo", "comparison"))
    france, beta = sft["france"], cmp["beta"]
    labels = {"PPO": rm["n_train_pairs"] + ppo["rater_labels"], "DPO": dpo["rater_labels"]}
    rows = [[r["method"], f"{r['attainment']:.2f}", f"{r['attainment_held_out']:.2f}", f"{r['kl']:.2f}",
             f"{labels.get(r['method'], 0):,}", "" if r["seconds"] is None else f"{r['seconds']:.0f}"]
            for r in cmp["table"]]
    run = "a quick smoke run: its numbers mean little" if metrics["quick"] else "a full run"
    main_figures = ("sft_answer_distribution.png", "preference_pairs.png", "france_over_training.png",
                    "comparison_france.png", "comparison_frontier.png")
    others = [name for stage in ("sft", "reward_model", "ppo", "dpo", "comparison")
              for name in metrics[stage].get("figures", []) if name not in main_figures]
    return [
        ("h1", "minirlhf demo: from Berlin to Paris"),
        ("p", f"Seed {metrics['seed']}, {run}, {metrics['total_seconds']:.0f} s in all. It follows the "
              "article (Anish Dubey, \"LLM Alignment: Reward-Based vs Reward-Free Methods\", 2024) on "
              "the question \"What is the capital of France?\"."),
        ("h2", "1. The base model" + (" says Berlin" if france["Berlin"] > france["Paris"] else "")),
        ("p", "After supervised fine-tuning, the model answers France with \"The capital of France is "
              f"Berlin.\" with probability {france['Berlin']:.2f} and with Paris {france['Paris']:.2f}; "
              f"it hedges {france['hedge']:.2f} of the time. It knows the answer, but it is not aligned."),
        ("img", "sft_answer_distribution.png", "Every country's answers, exactly: correct, wrong (mostly "
                                               "the country's common confusion), hedging, or malformed."),
        ("h2", "2. What the raters preferred, and what the reward model learned"),
        ("p", f"A simulated rater compared {rm['n_train_pairs']:,} pairs of the base model's answers (one "
              f"label each). From them the reward model learned, for France, {learned_order(rm)}. "
              "On held-out pairs it agrees with the rater "
              f"{rm['test_accuracy']:.0%} of the time; the best possible model would agree "
              f"{rm['bayes_optimal_accuracy']:.0%} of the time (the rater is noisy)."),
        ("img", "preference_pairs.png", "Which kind of answer the rater preferred, pair by pair."),
        ("h2", "3. PPO and DPO on France"),
        ("p", f"PPO (beta {beta}) samples its own answers, scores them with the reward model (which the "
              "rater keeps correcting, comparing the policy's answers with the base model's) and pays a KL "
              "penalty for leaving the base model. "
              "DPO learns offline from the same rated pairs: no reward model, no sampling."),
        ("img", "france_over_training.png", "P(Paris) and P(Berlin) during training."),
        ("h2", "4. How close each came to the exact optimum"),
        ("p", "Attainment is computed exactly on the candidate answers: 1 is the best policy of the "
              "KL-regularised objective, 0 no better than the base model; the held-out countries were "
              "never trained on. The KL to the base model (nats) lumps all malformed text in one "
              "outcome, so it is a lower bound, and the attainment an upper bound. Rater labels are what "
              "a real project pays for; seconds are this machine's."),
        ("table", ["method", "attainment", "held-out", "KL", "rater labels", "seconds"], rows),
        ("img", "comparison_france.png", "France: the base model, the optimum pi* and each policy."),
        ("img", "comparison_frontier.png", "True reward against KL: the exact optimal curve, each method."),
        ("h2", "5. Read next"),
        ("p", "The notebooks build each stage by hand, notebooks/01_sft_tiny_gpt.ipynb to "
              "06_beyond_ppo.ipynb. Every number of this run is in metrics.json. More figures:"),
        ("links", others),
    ]


def write_report(outdir: Path, metrics: dict) -> Path:
    """``report.md`` and ``report.html`` (the same story; the HTML embeds its images) in ``outdir``,
    the demo's folder (see :func:`demo_folder`), whose figures it reads. Returns the path of
    ``report.html``."""
    folder = _opened(outdir)
    md, html = [], ["<!doctype html><html><head><meta charset='utf-8'><title>minirlhf demo</title><style>",
                    "body{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.5;"
                    "padding:0 1em}",
                    "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
                    "padding:.2em .6em;text-align:right}figcaption{color:#555;font-size:.9em}",
                    "</style></head><body>"]
    for block in report_blocks(metrics):
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            md += [("# " if kind == "h1" else "## " if kind == "h2" else "") + block[1], ""]
            html.append(f"<{kind}>{escape(block[1])}</{kind}>")
        elif kind == "table":
            header, rows = block[1], block[2]
            md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(row) + " |" for row in rows] + [""]
            html.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                                  for row in rows) + "</table>")
        elif kind == "links":
            md += [", ".join(f"[{name}]({name})" for name in block[1]), ""]
            links = ", ".join(f"<a href='{escape(n)}'>{escape(n)}</a>" for n in block[1])
            html.append(f"<p>{links}</p>")
        elif kind == "img":
            name, caption = block[1], block[2]
            md += [f"![{caption}]({name})", "", f"*{caption}*", ""]
            data = base64.b64encode(folder.read_bytes(name)).decode()
            html.append(f"<figure><img src='data:image/png;base64,{data}' alt='{escape(caption)}'>"
                        f"<figcaption>{escape(caption)}</figcaption></figure>")
    folder.write_text("report.md", "\n".join(md))
    return folder.write_text("report.html", "\n".join(html + ["</body></html>"]))
