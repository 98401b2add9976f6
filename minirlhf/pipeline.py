"""The tutorial's pipeline: each stage of ``minirlhf demo`` in one call, and the demo's report.

No algorithm lives here: the stages call :mod:`minirlhf.sft`, :mod:`minirlhf.reward`,
:mod:`minirlhf.ppo` and :mod:`minirlhf.dpo` with their defaults, judge the results with
:mod:`minirlhf.evaluation`, and draw them with :mod:`minirlhf.plots`. Each ``*_stage`` function
writes its figures into ``outdir`` and returns plain values: a dict of JSON-able metrics, then the
objects that later stages need.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from minirlhf import plots, world
from minirlhf.compare import frontier_curve
from minirlhf.data import sft_corpus
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.evaluation import (EXACT_KEYS, answer_tracker, candidate_scores, comparison_table,
                                 exact_metrics, margin_calibration, markdown_table, reward_model_report)
from minirlhf.logprobs import token_log_ratios
from minirlhf.models import build_tiny_gpt, load_base_model, save_model
from minirlhf.optimum import ExactEvaluator, answer_kind_probs, with_outside
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.preferences import PAIRS_PER_PROMPT, collect_preferences, default_preferences
from minirlhf.reward import RewardConfig, RewardModel, train_reward_model
from minirlhf.sft import SFTConfig, train_sft
from minirlhf.utils import check_save_target, check_writable, json_safe

# ---------------------------------------------------------------------------------------------
# The tutorial's default models in one call
# ---------------------------------------------------------------------------------------------

def train_base_model(seed: int = 0, config: SFTConfig | None = None, device=None):
    """A random tiny GPT fine-tuned on :func:`minirlhf.data.sft_corpus`: how the shipped base model
    was made (about 25 s on 2 CPU cores). Returns ``(model, tokenizer, history)``."""
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
    :class:`RewardConfig`. Returns ``(reward_model, tokenizer, data, history)``: ``data`` is the
    train/test DatasetDict, and the history carries ``eval/...`` metrics on the test pairs."""
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

def sft_stage(outdir: Path, seed: int = 0, quick: bool = False) -> dict:
    """Train the SFT base model from scratch, save it and its figures; return the metrics."""
    config = SFTConfig(seed=seed, steps=60 if quick else SFTConfig.steps)
    start = time.perf_counter()
    model, tokenizer, history = train_base_model(seed=seed, config=config)
    seconds = time.perf_counter() - start
    save_model(model, tokenizer, outdir / "sft-model")
    countries = [c for c, _ in world.COUNTRIES]
    kinds = answer_kind_probs(model, tokenizer, [world.make_prompt(c) for c in countries])
    figures = plots.save_figures({
        "sft_loss.png": plots.plot_history(history, ["loss"], title="SFT loss (response tokens)"),
        "sft_answer_distribution.png": plots.plot_answer_kinds(kinds, countries,
                                                               "SFT model: exact answer distribution"),
    }, outdir)
    france = world.COUNTRIES.index(("France", "Paris"))
    evaluator = ExactEvaluator(model, tokenizer, world.prompts("train"))
    return {"steps": config.steps, "seconds": round(seconds, 1), "final_loss": history[-1]["loss"],
            "france_answer_mix": {k: round(float(v[france]), 3) for k, v in kinds.items()},
            "corpus_mix": world.STYLE_MIX, "coverage": evaluator.evaluate(model, beta=1.0)["coverage"],
            "figures": figures}


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
    metrics["figures"] = plots.save_figures(figures, outdir)
    return json_safe(metrics), reward_model, data


def ppo_stage(outdir: Path, reward_model, reward_data, quick: bool = False, seed: int = 0):
    """PPO scored by ``reward_model``, refreshed by the simulated rater on ``reward_data`` plus the
    policy's answers, from the shipped SFT model at the default config but 300 steps (about a
    minute on 2 cores; ``benchmarks/ppo.py`` runs the full 1000). Returns ``(metrics, policy)``."""
    ref, tokenizer = load_base_model()
    config = (PPOConfig(steps=4, eval_every=2, progress=False, seed=seed) if quick
              else PPOConfig(steps=300, eval_every=25, seed=seed))
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
    metrics["figures"] = plots.save_figures(figures, outdir)
    return json_safe(metrics), policy


def dpo_stage(outdir: Path, preferences, quick: bool = False, seed: int = 0):
    """Offline DPO, the article's reward-free method, with the default config from the shipped SFT
    model on ``preferences["train"]``: the very pairs (and rater labels) the reward model learned
    from, so that PPO and DPO pay the same labels. Returns ``(metrics, policy)``."""
    ref, tokenizer = load_base_model()
    config = DPOConfig(seed=seed, progress=not quick, **({"epochs": 1} if quick else {}))
    evaluate = exact_metrics(ExactEvaluator(ref, tokenizer, world.prompts("train")), config.beta,
                             held_out=ExactEvaluator(ref, tokenizer, world.prompts("held_out")))
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
    metrics["figures"] = plots.save_figures(figures, outdir)
    return json_safe(metrics), policy


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
            "figures": plots.save_figures(figures, outdir)}


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------

def demo(outdir: Path, seed: int = 0, quick: bool = False) -> Path:
    """Run every stage, write figures, ``metrics.json`` and ``report.md`` into ``outdir``.

    SFT is trained from scratch here, to show it; the later stages start from the shipped base
    model, which ``minirlhf sft`` trains again with the same seed. While it runs, ``outdir`` holds a
    ``RUNNING`` file and no report: an earlier run's report and metrics are removed at the start,
    and the new ones written last.
    """
    outdir = Path(outdir)
    check_writable(outdir)  # fail now, not after training
    check_save_target(outdir / "sft-model")
    outdir.mkdir(parents=True, exist_ok=True)
    running = outdir / "RUNNING"
    running.write_text("minirlhf demo is writing this folder, or was stopped: until this file is gone, the "
                       "figures may mix two runs.\n")
    for name in ("report.md", "metrics.json"):  # an earlier run's: they would describe other figures
        (outdir / name).unlink(missing_ok=True)
    metrics, seconds, policies = {"seed": seed, "quick": quick}, {}, {}
    timer = time.perf_counter()
    print("== Stage 1/5: supervised fine-tuning (SFT) ==", flush=True)
    metrics["sft"] = sft_stage(outdir, seed=seed, quick=quick)
    print("== Stage 2/5: preferences and the reward model ==", flush=True)
    metrics["reward_model"], reward_model, preferences = reward_stage(outdir, quick=quick, seed=seed)
    print("== Stage 3/5: PPO with a KL penalty ==", flush=True)
    metrics["ppo"], policies["PPO"] = ppo_stage(outdir, reward_model, preferences["train"], quick=quick,
                                                seed=seed)
    seconds["PPO"] = metrics["ppo"]["seconds"]
    print("== Stage 4/5: DPO on the same preferences ==", flush=True)
    metrics["dpo"], policies["DPO"] = dpo_stage(outdir, preferences, quick=quick, seed=seed)
    seconds["DPO"] = metrics["dpo"]["seconds"]
    print("== Stage 5/5: PPO and DPO against the exact optimum ==", flush=True)
    metrics["comparison"] = compare_stage(outdir, policies, seconds, metrics["ppo"]["beta"])
    print(metrics["comparison"]["table_markdown"])
    metrics["total_seconds"] = round(time.perf_counter() - timer, 1)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    write_report(outdir, metrics)
    running.unlink()
    return outdir


def write_report(outdir: Path, metrics: dict) -> Path:
    """A Markdown report with every figure, table and headline number of each stage."""
    lines = ["# minirlhf demo report", "",
             f"Seed {metrics.get('seed')}, {'quick smoke run' if metrics.get('quick') else 'full run'}, "
             f"{metrics.get('total_seconds', '?')} s in all.", ""]
    for stage, values in metrics.items():
        if not isinstance(values, dict):
            continue
        lines += [f"## {stage}", ""]
        if "table_markdown" in values:
            lines += [values["table_markdown"], ""]
        for key, value in values.items():
            if key not in ("figures", "table", "table_markdown"):
                lines.append(f"- **{key}**: {json.dumps(value, default=str)}")
        lines += [""] + [f"![{name}]({name})" for name in values.get("figures", [])] + [""]
    path = outdir / "report.md"
    path.write_text("\n".join(lines))
    return path
