"""The 2025-26 variants on one exact scoreboard: every minirlhf variant at one beta, several seeds,
measured exactly against the KL-regularised optimum of the true reward.

    nice -n 5 python benchmarks/scoreboard.py --threads 1                    # every variant, 3 seeds
    python benchmarks/scoreboard.py --variants grpo dapo --seeds 0           # a few
    python benchmarks/scoreboard.py --trl --seeds 0 --keep-others            # TRL's trainers (below)

Each run starts from the shipped SFT model. The critic-free variants (:mod:`minirlhf.grpo`) differ from
GRPO's defaults only in the fields :data:`VARIANTS` lists, and train for ``--steps`` batches of answers
with the true reward; the preference methods learn offline from labels the simulated rater gives once:
DPO and SimPO from the default pairs (:func:`minirlhf.preferences.default_preferences`), KTO from one
thumbs label per answer, as many labels as DPO's pairs (:func:`minirlhf.kto.unpaired_feedback`).
SimPO keeps DPOConfig's NLL term (``rpo_alpha``), as TRL's ``CPOConfig(loss_type="simpo")`` keeps its
``cpo_alpha=1``: "CPO-SimPO".

Per run: the exact attainment, true reward, KL(pi || pi_ref) and mass off the candidate set on the
training and the held-out countries (:class:`minirlhf.optimum.ExactEvaluator`); the expected answer
length and the entropy of the answer distribution on the candidate set (exact); the rater labels paid;
the wall time; and for the critic-free methods the share of groups whose rewards were all equal.

``--trl`` runs TRL 1.16's own trainers (:data:`TRL_METHODS`): ``GRPOTrainer`` once per ``loss_type``,
``RLOOTrainer``, ``DPOTrainer`` (its ``loss_type`` with minirlhf's NLL term as TRL's ``"sft"`` loss),
``CPOTrainer`` for SimPO and ``KTOTrainer``, each at the settings that :mod:`minirlhf.integrations.trl`
maps from minirlhf's config (GRPO: k3 in the loss, TRL's default KL bias correction, fixed embeddings),
and, for every method minirlhf also has, minirlhf's trainer with the very same config beside it
(``impl`` ``trl`` and ``minirlhf-pair``), so that the two can be compared run for run (``agreement``:
the difference of their medians against the larger of their seed ranges). TRL's other loss types
(``sapo``, ``luspo``, ``vespo``; DPO's ``hinge``, ``robust``, ...) run in TRL alone when named in
``--trl-methods``.

    nice -n 5 python benchmarks/scoreboard.py --trl --threads 1 --keep-others     # TRL beside minirlhf
    python benchmarks/scoreboard.py --trl --trl-methods sapo vespo hinge --seeds 0 --keep-others

Writes ``benchmarks/results/scoreboard.json`` and the figure ``scoreboard.png`` (every variant on the
exact reward-KL frontier of the training countries).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from minirlhf import world
from minirlhf.compare import frontier_curve, frontier_efficiency
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.grpo import GRPOConfig, train_grpo
from minirlhf.kto import KTOConfig, train_kto, unpaired_feedback
from minirlhf.saved_models import load_base_model
from minirlhf.optimum import ExactEvaluator
from minirlhf.preferences import PAIRS_PER_PROMPT, default_preferences

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BETA = 0.1

# name -> (trainer, the fields that differ from that trainer's defaults, the failure it was designed against)
VARIANTS: dict[str, tuple[str, dict, str]] = {
    "grpo": ("grpo", {}, "a learned critic (GRPO's group baseline replaces PPO's value model)"),
    "dr_grpo": ("grpo", {"advantage": "dr_grpo"},
                "the length and difficulty biases of GRPO's per-answer mean and per-group std"),
    "rloo": ("grpo", {"advantage": "rloo"}, "the bias of a baseline that includes the answer itself"),
    "bnpo": ("grpo", {"loss_type": "bnpo"}, "length bias (every token of the minibatch weighs the same)"),
    "dapo_token_mean": ("grpo", {"loss_type": "dapo"},
                        "length bias: long answers' tokens diluted by GRPO's per-answer mean"),
    "clip_higher": ("grpo", {"epsilon_high": 0.28}, "entropy collapse (unlikely good tokens capped at 1 + eps)"),
    "dynamic_sampling": ("grpo", {"dynamic_sampling": True},
                         "groups whose answers all score the same: zero advantage, no signal"),
    "overlong_filter": ("grpo", {"mask_truncated_completions": True},
                        "answers cut at the length limit punished for being cut, not for being wrong"),
    "overlong_penalty": ("grpo", {"soft_punish_cache": 4}, "runaway answer length"),
    "dapo": ("grpo", {"loss_type": "dapo", "epsilon_high": 0.28, "dynamic_sampling": True,
                      "mask_truncated_completions": True},
             "all four of DAPO's failures at once (its recipe, less the soft length penalty)"),
    "gspo": ("grpo", {"importance_sampling_level": "sequence", "clip_range": 3e-4, "epsilon_high": 4e-4},
             "the noise of per-token ratios on a sequence-level reward"),
    "cispo": ("grpo", {"loss_type": "cispo", "epsilon_high": 5.0},
              "PPO's clip dropping the gradient of rare tokens"),
    "dpo": ("dpo", {}, "RL's sampling and reward model (the article's method, offline)"),
    "simpo": ("dpo", {"loss_type": "simpo"},
              "the reference model's cost and DPO's length bias (reference-free, per-token reward)"),
    "kto": ("kto", {}, "the cost of paired labels (one thumbs label per answer)"),
}
TRL_DRAWING = {"embedding_lr_scale": 0.0, "distinct_prompts": True}
"""What minirlhf's GRPOConfig takes from TRL's trainers: TRL trains the embeddings at the full rate, so both
fix them; TRL's sampler gives each step distinct prompts (minirlhf's default draws with replacement)."""
TRL_RECIPE = {"kl": "loss", "use_bias_correction_kl": True, **TRL_DRAWING}
"""minirlhf's GRPOConfig fields that make it train as TRL's GRPOTrainer does (TRL's KL is k3 in the loss,
with its default ``use_bias_correction_kl``), with :data:`TRL_DRAWING`."""
MINIRLHF_SCHEDULE = "minirlhf_schedule"
"""A TRL field of :data:`TRL_METHODS` that is not TRL's: give TRL's trainer minirlhf's learning-rate schedule."""
# name -> (TRL's trainer, minirlhf's config fields of the pair, TRL's fields where minirlhf has no pair or
# names it differently). A method whose minirlhf fields are None runs in TRL only.
TRL_METHODS: dict[str, tuple[str, dict | None, dict]] = {
    **{lt: ("grpo", {**TRL_RECIPE, "loss_type": lt}, {}) for lt in ("grpo", "bnpo", "dapo")},
    "dr_grpo": ("grpo", {**TRL_RECIPE, "loss_type": "dr_grpo", "advantage": "dr_grpo"}, {}),
    "cispo": ("grpo", {**TRL_RECIPE, "loss_type": "cispo", "epsilon_high": 5.0}, {}),
    "clip_higher": ("grpo", {**TRL_RECIPE, "epsilon_high": 0.28}, {}),
    "overlong_filter": ("grpo", {**TRL_RECIPE, "mask_truncated_completions": True}, {}),
    "overlong_penalty": ("grpo", {**TRL_RECIPE, "soft_punish_cache": 4}, {}),  # TRL: a reward function
    "gspo": ("grpo", {**TRL_RECIPE, "importance_sampling_level": "sequence", "clip_range": 3e-4,
                      "epsilon_high": 4e-4}, {}),
    # one minibatch per batch of answers: TRL splits the shuffled answers, minirlhf whole groups, into minibatches
    **{f"{name}_one_minibatch": ("grpo", {**TRL_RECIPE, **fields, "minibatches": 1}, {})
       for name, fields in (("gspo", {"importance_sampling_level": "sequence", "clip_range": 3e-4,
                                      "epsilon_high": 4e-4}),
                            ("overlong_filter", {"mask_truncated_completions": True}))},
    # no warm-up: TRL's warms up per optimizer step from rate 0, minirlhf's per batch of answers from 1/warmup
    "gspo_no_warmup": ("grpo", {**TRL_RECIPE, "importance_sampling_level": "sequence", "clip_range": 3e-4,
                                "epsilon_high": 4e-4, "warmup_steps": 0}, {}),
    # minirlhf's schedule in TRL: the rate set once per batch of answers, not at every optimizer step
    "gspo_batch_schedule": ("grpo", {**TRL_RECIPE, "importance_sampling_level": "sequence", "clip_range": 3e-4,
                                     "epsilon_high": 4e-4}, {MINIRLHF_SCHEDULE: True}),
    "overlong_filter_batch_schedule": ("grpo", {**TRL_RECIPE, "mask_truncated_completions": True},
                                       {MINIRLHF_SCHEDULE: True}),
    "sapo": ("grpo", None, {"loss_type": "sapo"}),
    "luspo": ("grpo", None, {"loss_type": "luspo", "importance_sampling_level": "sequence",
                             "epsilon": 3e-4, "epsilon_high": 4e-4}),
    "vespo": ("grpo", None, {"loss_type": "vespo"}),
    "rloo": ("rloo", {"advantage": "rloo", **TRL_DRAWING}, {}),
    # one pass of one minibatch: every ratio is 1, where the two RLOO losses differ by a constant only
    "rloo_one_pass": ("rloo", {"advantage": "rloo", "epochs": 1, "minibatches": 1, **TRL_DRAWING}, {}),
    "dpo": ("dpo", {}, {}),
    "ipo": ("dpo", None, {"loss_type": "ipo"}),  # TRL's divides by the answer's length; minirlhf's does not
    **{lt: ("dpo", None, {"loss_type": lt}) for lt in ("hinge", "robust", "bco_pair", "sppo_hard", "nca_pair",
                                                         "apo_zero", "apo_down", "discopop", "sigmoid_norm")},
    "simpo": ("cpo", {"loss_type": "simpo"}, {}),
    "kto": ("kto", {}, {}),
    "kto_prompt_order": ("kto", None, {}),
}
KTO_PROMPT_ORDER = "kto_prompt_order"
"""TRL's KTO on rows grouped by prompt, each prompt's answers together as
:func:`~minirlhf.kto.unpaired_feedback` lists them, not shuffled (:func:`~minirlhf.integrations.trl.kto_dataset`
says why that matters)."""
DIAGNOSTIC = ("rloo_one_pass", "gspo_one_minibatch", "overlong_filter_one_minibatch", "gspo_no_warmup",
              "gspo_batch_schedule", "overlong_filter_batch_schedule", KTO_PROMPT_ORDER)
"""Methods run to find why a pair differs, not methods of their own."""
TRL_DEFAULT = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "clip_higher", "overlong_filter", "overlong_penalty",
               "gspo", "rloo", "dpo", "simpo", "kto", *DIAGNOSTIC)
"""The methods ``--trl`` runs unless told: every one that minirlhf also has, with the same settings, and
the diagnostic runs."""
SUMMARY_KEYS = ("train_attainment", "held_out_attainment", "train_kl", "train_true_reward", "train_leak",
                "held_out_leak", "answer_length", "entropy", "rater_labels", "seconds",
                "frac_reward_zero_std", "frontier_efficiency")


def answer_stats(evaluator: ExactEvaluator, set_probs: torch.Tensor, tokenizer) -> dict[str, float]:
    """Exact figures of the answer distribution renormalised on the candidate set, prompt means: the
    expected answer length in tokens (EOS included) and the entropy in nats."""
    lengths = torch.tensor([[len(tokenizer(y, add_special_tokens=False)["input_ids"]) + 1 for y in ys]
                            for ys in evaluator.candidates], dtype=torch.float32)
    probs = set_probs / set_probs.sum(-1, keepdim=True)
    entropy = -(probs * probs.clamp(min=1e-30).log()).sum(-1)
    return {"answer_length": (probs * lengths).sum(-1).mean().item(), "entropy": entropy.mean().item()}


def exact_evaluators(ref, tokenizer) -> dict[str, ExactEvaluator]:
    """The exact yardsticks of every run: the training and the held-out countries, against ``ref``."""
    return {split: ExactEvaluator(ref, tokenizer, world.prompts(split)) for split in ("train", "held_out")}


def measure(policy, evaluators: dict, tokenizer, curve) -> dict[str, float]:
    """The exact figures of one trained policy."""
    out = {}
    for split, evaluator in evaluators.items():
        set_probs = evaluator.set_probs(policy)
        report = evaluator.evaluate_probs(set_probs, BETA)
        out.update({f"{split}_attainment": report["attainment"], f"{split}_kl": report["kl"],
                    f"{split}_true_reward": report["true_reward"], f"{split}_leak": 1 - report["coverage"],
                    f"{split}_p_correct": report["p_correct"]})
        if split == "train":
            out.update(answer_stats(evaluator, set_probs, tokenizer))
            out["frontier_efficiency"] = frontier_efficiency(curve, report["kl"], report["true_reward"])
    return out


def grpo_config(name: str, seed: int, steps: int, extra: dict | None = None) -> GRPOConfig:
    """The config of a critic-free variant: GRPO's defaults but ``VARIANTS[name]``'s fields."""
    fields = {**VARIANTS[name][1], **(extra or {})} if name in VARIANTS else dict(extra or {})
    return GRPOConfig(beta=BETA, seed=seed, steps=steps, eval_every=0, progress=False, **fields)


def run_minirlhf(name: str, seed: int, steps: int, ref, tokenizer, data: dict) -> dict:
    """Train one variant from the SFT model; return the policy's figures before measuring."""
    trainer, fields, _ = VARIANTS[name]
    policy = copy.deepcopy(ref)
    start = time.perf_counter()
    extra = {}
    if trainer == "grpo":
        _, history = train_grpo(policy, ref, tokenizer, world.prompts("train"), grpo_config(name, seed, steps))
        labels = 0
        extra = {"frac_reward_zero_std": statistics.mean(h["frac_reward_zero_std"] for h in history),
                 "groups_kept": statistics.mean(h.get("groups_kept", 1.0) for h in history)}
    elif trainer == "dpo":
        train_dpo(policy, ref, tokenizer, data["pairs"], DPOConfig(beta=BETA, seed=seed, progress=False, **fields))
        labels = len(data["pairs"])
    else:
        feedback = data["thumbs"][seed]
        train_kto(policy, ref, tokenizer, feedback, KTOConfig(beta=BETA, seed=seed, progress=False, **fields))
        labels = len(feedback)
    return policy, {"rater_labels": labels, "seconds": time.perf_counter() - start, **extra}


def trl_config(name: str, seed: int, steps: int):
    """minirlhf's config of TRL method ``name`` (its pair's; GRPO's or DPO's defaults for a TRL-only
    method) and TRL's keyword arguments for it (:mod:`minirlhf.integrations.trl`)."""
    from minirlhf.integrations.trl import dpo_args, grpo_args, kto_args, rloo_args, simpo_args

    trainer, fields, trl_fields = TRL_METHODS[name]
    fields = fields if fields is not None else dict(TRL_RECIPE) if trainer == "grpo" else {}
    if trainer in ("grpo", "rloo"):
        config = grpo_config("", seed, steps, fields)
        args = (grpo_args if trainer == "grpo" else rloo_args)(config)
    elif trainer == "kto":
        config = KTOConfig(beta=BETA, seed=seed, progress=False, **fields)
        args = kto_args(config)
    else:
        config = DPOConfig(beta=BETA, seed=seed, progress=False, **fields)
        args = simpo_args(config) if trainer == "cpo" else dpo_args(config)
    if "loss_type" in trl_fields and trainer == "dpo":  # TRL-only: its loss, minirlhf's NLL term beside it
        args["loss_type"] = [trl_fields["loss_type"], *args["loss_type"][1:]]
        trl_fields = {k: v for k, v in trl_fields.items() if k != "loss_type"}
    return config, {**args, **trl_fields}


def run_trl(name: str, seed: int, steps: int, ref, tokenizer, threads: int, data: dict) -> tuple:
    """TRL's trainer for method ``name`` (:data:`TRL_METHODS`) from the SFT model, at the settings of
    :func:`trl_config`; returns (policy, figures)."""
    import trl
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.rewards import get_soft_overlong_punishment

    from minirlhf.export import preference_data, prompt_data
    from minirlhf.integrations.trl import freeze_like, kto_dataset, run_args, true_reward_func

    kind = TRL_METHODS[name][0]
    config, args = trl_config(name, seed, steps)
    minirlhf_schedule = args.pop(MINIRLHF_SCHEDULE, False)
    policy = copy.deepcopy(ref).train()
    freeze_like(policy, config.frozen_blocks, config.embedding_lr_scale)
    reference = copy.deepcopy(ref).eval().requires_grad_(False)
    common = {"output_dir": tempfile.mkdtemp(prefix="scoreboard-trl-"), "logging_steps": 10 ** 6,
              **run_args(threads)}
    start = time.perf_counter()
    if kind in ("grpo", "rloo"):
        Config, Trainer = ((trl.GRPOConfig, trl.GRPOTrainer) if kind == "grpo"
                           else (trl.RLOOConfig, trl.RLOOTrainer))
        reward_funcs = [true_reward_func]
        if config.soft_punish_cache:  # DAPO's soft overlong punishment is a reward function in TRL
            reward_funcs.append(get_soft_overlong_punishment(config.max_new_tokens, config.soft_punish_cache))
        optimizers = (None, None)
        if minirlhf_schedule:  # the rate of train_grpo: linear, set once per batch of answers
            from minirlhf.training import lr_factor

            per_batch = config.epochs * config.minibatches
            optimizer = torch.optim.AdamW([q for q in policy.parameters() if q.requires_grad],
                                          lr=args["learning_rate"], eps=config.adam_eps, weight_decay=0.0)
            optimizers = (optimizer, torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda s: lr_factor(s // per_batch, config.steps, config.warmup_steps, "linear")))
        trainer = Trainer(model=policy, reward_funcs=reward_funcs, processing_class=tokenizer,
                          train_dataset=prompt_data("train"), args=Config(**common, **args),
                          optimizers=optimizers)
        labels = 0
    elif kind == "kto":
        feedback = kto_dataset(data["thumbs"][seed], seed)
        if name == KTO_PROMPT_ORDER:
            feedback = feedback.sort("prompt")
        trainer = trl.KTOTrainer(model=policy, ref_model=reference, processing_class=tokenizer,
                                 train_dataset=feedback, args=trl.KTOConfig(**common, **args))
        labels = len(feedback)
    else:
        pairs = preference_data()["train"]
        if kind == "cpo":
            trainer = CPOTrainer(model=policy, processing_class=tokenizer, train_dataset=pairs,
                                 args=CPOConfig(**common, **args))
        else:
            trainer = trl.DPOTrainer(model=policy, ref_model=reference, processing_class=tokenizer,
                                     train_dataset=pairs,
                                     args=trl.DPOConfig(**common, precompute_ref_log_probs=True, **args))
        labels = len(pairs)
    trainer.train()
    policy = trainer.model.eval()
    for parameter in policy.parameters():
        parameter.requires_grad_(True)
    return policy, {"rater_labels": labels, "seconds": time.perf_counter() - start}


def run_pair(name: str, seed: int, steps: int, ref, tokenizer, data: dict) -> tuple:
    """minirlhf's own trainer with the config of TRL method ``name`` (:func:`trl_config`)."""
    kind = TRL_METHODS[name][0]
    config, _ = trl_config(name, seed, steps)
    policy = copy.deepcopy(ref)
    start = time.perf_counter()
    figures = {}
    if kind in ("grpo", "rloo"):
        _, history = train_grpo(policy, ref, tokenizer, world.prompts("train"), config)
        labels = 0
        figures["frac_reward_zero_std"] = statistics.mean(h["frac_reward_zero_std"] for h in history)
    elif kind == "kto":
        train_kto(policy, ref, tokenizer, data["thumbs"][seed], config)
        labels = len(data["thumbs"][seed])
    else:
        train_dpo(policy, ref, tokenizer, data["pairs"], config)
        labels = len(data["pairs"])
    return policy, {"rater_labels": labels, "seconds": time.perf_counter() - start, **figures}


def summarise(runs: list[dict]) -> list[dict]:
    """Medians over seeds of each (variant, implementation)."""
    rows = []
    for key in dict.fromkeys((r["variant"], r["impl"]) for r in runs):
        mine = [r for r in runs if (r["variant"], r["impl"]) == key]
        row = {"variant": key[0], "impl": key[1], "seeds": len(mine)}
        for field in SUMMARY_KEYS:
            values = [r[field] for r in mine if field in r]
            if values:
                row[f"{field}_median"] = statistics.median(values)
                row[f"{field}_min"], row[f"{field}_max"] = min(values), max(values)
        rows.append(row)
    return rows


def agreement(runs: list[dict]) -> list[dict]:
    """For each method run by TRL and by minirlhf with the same config: the difference of the two
    implementations' medians over seeds, and the tolerance it is held to, the larger of the two seed
    ranges (max - min) of that method. ``within`` says whether |difference| <= tolerance. A range grows
    with the number of seeds, so each row also has the two-sided Mann-Whitney U test's p-value of the
    two sets of seeds (small: the two libraries' runs differ more than their seeds do)."""
    from scipy.stats import mannwhitneyu

    rows = []
    for name in dict.fromkeys(r["variant"] for r in runs if r["impl"] == "trl"):
        theirs = [r for r in runs if r["variant"] == name and r["impl"] == "trl"]
        ours = [r for r in runs if r["variant"] == name and r["impl"] == "minirlhf-pair"]
        if not ours:
            continue
        row = {"variant": name, "seeds": min(len(theirs), len(ours)), "diagnostic": name in DIAGNOSTIC}
        for split in ("train", "held_out"):
            a, b = ([r[f"{split}_attainment"] for r in rs] for rs in (theirs, ours))
            diff = statistics.median(a) - statistics.median(b)
            tolerance = max(max(a) - min(a), max(b) - min(b))
            row.update({f"{split}_difference": diff, f"{split}_tolerance": tolerance,
                        f"{split}_within": abs(diff) <= tolerance,
                        # how likely seeds this far apart are if both libraries' runs come from one distribution
                        f"{split}_mann_whitney_p": float(mannwhitneyu(a, b).pvalue)})
        rows.append(row)
    return rows


def save_figure(result: dict, path: Path) -> None:
    """Two panels on the exact frontier of the training countries: minirlhf's variants (left), and TRL's
    trainers beside minirlhf with the same config (right); each point a median (KL, true reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, star = result["curve"], result["optimum_at_beta"]
    panels = [(f"minirlhf's variants at beta {result['beta']}: medians of {result['seeds_per_variant']} seeds, "
               f"{result['budget']['grpo_steps']} steps for the critic-free ones",
               [r for r in result["summary"] if r["impl"] == "minirlhf"]),
              ("TRL's trainers (squares), minirlhf with the same config (triangles)",
               [r for r in result["summary"] if r["impl"] != "minirlhf"])]
    panels = [(title, rows) for title, rows in panels if rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 7.2 * len(panels)), sharex=True, squeeze=False)
    markers = {"minirlhf": "o", "trl": "s", "minirlhf-pair": "^"}
    colours = [*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors]
    right = max(max(r["train_kl_median"] for _, rows in panels for r in rows), star["kl"]) * 1.08
    for ax, (title, rows) in zip(axes[:, 0], panels):
        ax.plot([q["kl"] for q in curve], [q["reward"] for q in curve], color="black", lw=1.5,
                label="exact optimum pi*_beta (all beta)")
        names = list(dict.fromkeys(r["variant"] for r in rows))
        for row in sorted(rows, key=lambda r: (names.index(r["variant"]), r["impl"])):
            label = row["variant"] if row["impl"] == "minirlhf" else f"{row['variant']} ({row['impl']})"
            ax.scatter(row["train_kl_median"], row["train_true_reward_median"], marker=markers[row["impl"]],
                       color=colours[names.index(row["variant"]) % len(colours)], s=45, edgecolor="black",
                       linewidth=0.5, label=label, zorder=3)
        ax.scatter(star["kl"], star["reward"], marker="*", s=160, color="gold", edgecolor="black", zorder=4,
                   label=f"pi* at beta {result['beta']}")
        ax.set_xlim(0, right)
        ax.set_xlabel("KL(pi || pi_ref), exact (training countries)")
        ax.set_ylabel("E_pi[true reward], exact")
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(files: list[Path], out: Path) -> int:
    """One results file from several (e.g. of processes run side by side on different variants): the
    runs of all, the settings of the first, the machine's load of each."""
    parts = [json.loads(f.read_text()) for f in files]
    result = {**parts[0], "runs": [r for part in parts for r in part["runs"]]}
    if len(parts) > 1:
        result["machine"] = {**parts[0]["machine"], "processes_side_by_side": len(parts),
                             "load_average_at_end": [part["machine"]["load_average_at_end"] for part in parts]}
    result["budget"] = {k: next((p["budget"][k] for p in parts if p["budget"].get(k) is not None), None)
                        for k in parts[0]["budget"]}
    result["summary"] = summarise(result["runs"])
    result["agreement"] = agreement(result["runs"])
    write_result(result, out)
    print(f"wrote {out} and {out.with_suffix('.png')} from {len(files)} files")
    return 0


def write_result(result: dict, out: Path) -> None:
    """Write ``result`` to ``out`` and its figure beside it; when ``out`` is the stored results file,
    also the copy that notebook 07 reads (``minirlhf/cached_runs/scoreboard.json``)."""
    text = json.dumps(result, indent=1)
    out.write_text(text)
    save_figure(result, out.with_suffix(".png"))
    if out.resolve() == (RESULTS / "scoreboard.json").resolve():
        (ROOT / "minirlhf" / "cached_runs" / "scoreboard.json").write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40, help="steps of the critic-free variants (a short budget)")
    parser.add_argument("--trl", action="store_true", help="run TRL's trainers (and, where minirlhf has "
                        "the method, the same config in minirlhf) instead of the minirlhf variants")
    parser.add_argument("--trl-methods", nargs="+", default=list(TRL_DEFAULT), choices=list(TRL_METHODS),
                        help="TRL's methods to run with --trl (default: those minirlhf also has)")
    parser.add_argument("--pairs-only", action="store_true",
                        help="with --trl, run only minirlhf's side (keep TRL's stored runs: --keep-others)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-others", action="store_true",
                        help="keep the stored runs of every (variant, impl, seed) not run now")
    parser.add_argument("--out", type=Path, default=RESULTS / "scoreboard.json")
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="only merge these results files (runs of parallel processes) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    torch.set_num_threads(args.threads)
    load_at_start = list(os.getloadavg())
    ref, tokenizer = load_base_model()
    evaluators = exact_evaluators(ref, tokenizer)
    curve = frontier_curve(evaluators["train"])
    star = evaluators["train"].evaluate_probs(evaluators["train"].optimum(BETA)[:, :-1], BETA)
    kinds = ({TRL_METHODS[m][0] for m in args.trl_methods} if args.trl
             else {VARIANTS[v][0] for v in args.variants} | ({"kto"} if "kto" in args.variants else set()))
    data = {}
    if kinds & {"dpo", "cpo"}:
        data["pairs"] = default_preferences(progress=False)["train"]
    if "kto" in kinds:  # as many labels as DPO's pairs, one per answer
        data["thumbs"] = {s: unpaired_feedback(ref, tokenizer, world.prompts("train"), PAIRS_PER_PROMPT,
                                               world.SimulatedRater(seed=s), seed=s) for s in args.seeds}
    runs = []
    jobs = ([("trl", m, s) for m in args.trl_methods for s in args.seeds if not args.pairs_only]
            + [("minirlhf-pair", m, s) for m in args.trl_methods if TRL_METHODS[m][1] is not None
               for s in args.seeds] if args.trl
            else [("minirlhf", v, s) for v in args.variants for s in args.seeds])
    for impl, name, seed in jobs:
        if impl == "minirlhf":
            policy, figures = run_minirlhf(name, seed, args.steps, ref, tokenizer, data)
        elif impl == "trl":
            policy, figures = run_trl(name, seed, args.steps, ref, tokenizer, args.threads, data)
        else:  # the same config in minirlhf's own loop
            policy, figures = run_pair(name, seed, args.steps, ref, tokenizer, data)
        row = {"variant": name, "impl": impl, "seed": seed, **figures,
               **measure(policy, evaluators, tokenizer, curve)}
        runs.append(row)
        print(f"{impl:13s} {name:17s} seed {seed}: attainment {row['train_attainment']:.3f} "
              f"(held-out {row['held_out_attainment']:.3f}), KL {row['train_kl']:.3f}, "
              f"leak {row['train_leak']:.3f}, length {row['answer_length']:.2f}, {row['seconds']:.0f} s",
              flush=True)
    old = json.loads(args.out.read_text()) if args.keep_others and args.out.is_file() else None
    if old is not None:
        done = {(r["variant"], r["impl"], r["seed"]) for r in runs}
        runs = [r for r in old["runs"] if (r["variant"], r["impl"], r["seed"]) not in done] + runs
        data.setdefault("pairs", None)
    result = {
        "beta": BETA,  # the seeds of minirlhf's own variants (a --trl run keeps the stored count)
        "seeds_per_variant": old["seeds_per_variant"] if old is not None and args.trl else len(args.seeds),
        "budget": {"grpo_steps": args.steps, "grpo_answers_per_step": GRPOConfig().prompts_per_step
                   * GRPOConfig().group_size, "dpo_pairs": (len(data["pairs"]) if data.get("pairs") is not None
                                 else old["budget"]["dpo_pairs"] if old else None),
                   "dpo_epochs": DPOConfig().epochs, "kto_epochs": KTOConfig().epochs,
                   "kto_answers_per_prompt": PAIRS_PER_PROMPT},
        "designed_against": {name: v[2] for name, v in VARIANTS.items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "load_average_at_start": load_at_start,
                    "load_average_at_end": list(os.getloadavg()),
                    "python": sys.version.split()[0], "torch": torch.__version__},
        "optimum_at_beta": {"kl": star["kl"], "reward": star["true_reward"]},
        "curve": curve, "runs": runs, "summary": summarise(runs), "agreement": agreement(runs)}
    write_result(result, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
