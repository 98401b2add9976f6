"""PPO-GT, PPO with the learned reward model, and DPO against the exact optimal reward-KL curve.

For each beta of the sweep, train each method with its defaults (only beta changes), then measure
it exactly on the training prompts with the true reward: KL(pi || pi_ref), E_pi[r], the attainment,
and the frontier efficiency (the fraction of the optimal curve's reward gain reached at the same
KL). Also runs the off-policy experiment: DPO on hand-written pairs vs on pairs sampled from the
reference, and PPO-GT, with the probability each moves onto responses no pair covers.

    python benchmarks/frontier.py                       # full sweep (about an hour on 2 cores)
    python benchmarks/frontier.py --betas 0.1 0.5 --seeds 0
    python benchmarks/frontier.py --methods DPO --keep-others   # after a change to DPO only

``--keep-others`` reruns only ``--methods`` and takes every other method's results (its sweep
points, its France distribution, its off-policy row) from the existing ``frontier.json``.

Writes ``benchmarks/results/frontier.json``, ``.md`` and ``.png`` (the README's figure); with
``--notebook-cache`` also the cache that notebook 05 reads (``minirlhf/cached_runs/frontier.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from minirlhf import world
from minirlhf.compare import (PLAIN_DPO, frontier_curve, frontier_efficiency, offpolicy_preferences,
                              unseen_mass)
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.online_dpo import OnlineDPOConfig, train_online_dpo
from minirlhf.optimum import ExactEvaluator, with_outside
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.preferences import default_preferences
from minirlhf.pipeline import train_default_reward_model
from minirlhf.saved_models import load_base_model

ROOT = Path(__file__).resolve().parents[1]
PPO_STEPS = None  # None: PPOConfig's default; --ppo-steps sets it for a smoke run


def train_method(method: str, beta: float, seed: int, ref, tokenizer, reward_model, reward_data,
                 preferences):
    """Train one method from the base model; return (policy, wall seconds, rater labels). PPO-RM gets
    the rater too, which refreshes its reward model on the policy's answers (PPOConfig's default);
    its labels are the reward model's pairs plus the refreshes'. Offline DPO learns from the same
    pairs as the reward model; online DPO pays for every fresh pair."""
    policy = copy.deepcopy(ref)
    start = time.perf_counter()
    if method == "DPO":  # offline, on the reward model's pairs: the same labels as PPO-RM starts with
        train_dpo(policy, ref, tokenizer, preferences, DPOConfig(beta=beta, seed=seed, progress=False))
        labels = len(preferences)
    elif method == "Online DPO":
        _, history = train_online_dpo(policy, ref, tokenizer, world.prompts("train"),
                                      world.SimulatedRater(seed=seed),
                                      OnlineDPOConfig(beta=beta, seed=seed, progress=False))
        labels = history[-1]["rater_labels"]
    else:
        config = PPOConfig(beta=beta, seed=seed, progress=False, eval_every=0)
        config.steps = PPO_STEPS or config.steps
        learned = ({"reward_model": reward_model, "reward_data": reward_data,
                    "rater": world.SimulatedRater(seed=seed)} if method == "PPO-RM" else {})
        _, history = train_ppo(policy, ref, tokenizer, world.prompts("train"), config, **learned)
        labels = len(reward_data) + history[-1]["rater_labels"] if method == "PPO-RM" else 0
    return policy, time.perf_counter() - start, labels


def sweep(betas, seeds, methods, keep_beta: float) -> tuple[dict, dict]:
    """Train every method at every beta and seed; measure each exactly on the training prompts
    (and the held-out ones). Returns the results and the policies trained at ``keep_beta`` with
    the first seed (for the off-policy experiment and the France bar chart)."""
    ref, tokenizer = load_base_model()
    evaluator = ExactEvaluator(ref, tokenizer, world.prompts("train"))
    held_out = ExactEvaluator(ref, tokenizer, world.prompts("held_out"))
    reward_model, _, reward_data, _ = train_default_reward_model(seed=0, progress=False)
    preferences = default_preferences(progress=False)["train"]
    curve = frontier_curve(evaluator)
    runs, kept = [], {}
    for beta in betas:
        for method in methods:
            for seed in seeds:
                policy, seconds, labels = train_method(method, beta, seed, ref, tokenizer, reward_model,
                                                       reward_data["train"], preferences)
                report = evaluator.evaluate(policy, beta)
                runs.append({"method": method, "beta": beta, "seed": seed, "seconds": seconds,
                             "rater_labels": labels,
                             "kl": report["kl"], "true_reward": report["true_reward"],
                             "attainment": report["attainment"], "coverage": report["coverage"],
                             "attainment_held_out": held_out.evaluate(policy, beta)["attainment"],
                             "efficiency": frontier_efficiency(curve, report["kl"],
                                                               report["true_reward"])})
                if beta == keep_beta and seed == seeds[0]:
                    kept[method] = policy
                print(f"{method:7s} beta={beta:<5} seed={seed} KL={report['kl']:.3f} "
                      f"r={report['true_reward']:.3f} eff={runs[-1]['efficiency']:.3f} "
                      f"att={report['attainment']:.3f} held-out={runs[-1]['attainment_held_out']:.3f} "
                      f"({seconds:.1f} s)", flush=True)
    return {"curve": curve, "runs": runs}, kept


def france_distributions(policies: dict, beta: float) -> dict:
    """pi_ref, pi* and each policy over the France candidates (+ "outside"), as lists."""
    ref, tokenizer = load_base_model()
    france = ExactEvaluator(ref, tokenizer, [world.make_prompt("France")])
    dists = {"pi_ref": with_outside(france.ref_set_probs[0]), f"pi* (beta={beta})": france.optimum(beta)[0]}
    dists.update({name: with_outside(france.set_probs(p)[0]) for name, p in policies.items()})
    return {"candidates": france.candidates[0] + ["(outside the set)"],
            "probs": {name: [round(float(x), 6) for x in d] for name, d in dists.items()}}


def offpolicy_experiment(beta: float, seed: int, ppo_policy) -> dict:
    """Probability moved onto responses absent from the data: offline DPO on hand-written
    (off-policy) pairs and on pairs sampled from pi_ref, DPO with its on-policy rounds (defaults)
    from the hand-written pairs, and ``ppo_policy`` (PPO-GT, which sees no pairs at all; skipped
    when None)."""
    ref, tokenizer = load_base_model()
    prompts = world.prompts("train")
    evaluator = ExactEvaluator(ref, tokenizer, prompts)
    off = offpolicy_preferences(prompts, seed=seed)
    datasets = {"off-policy pairs": off,
                "pairs sampled from pi_ref": default_preferences(progress=False)["train"]}
    out = {"reference": {name: unseen_mass(evaluator, evaluator.ref_set_probs, data)
                         for name, data in datasets.items()}}
    for name, data in datasets.items():
        policy = copy.deepcopy(ref)
        train_dpo(policy, ref, tokenizer, data, DPOConfig(beta=beta, seed=seed, progress=False, **PLAIN_DPO))
        out[f"plain DPO, {name}"] = _mass_report(evaluator, policy, off, beta)
    policy = copy.deepcopy(ref)
    train_dpo(policy, ref, tokenizer, off, DPOConfig(beta=beta, seed=seed, progress=False))
    out["DPO (defaults: RPO), off-policy pairs"] = _mass_report(evaluator, policy, off, beta)
    policy = copy.deepcopy(ref)
    train_online_dpo(policy, ref, tokenizer, prompts, world.SimulatedRater(seed=seed),
                     OnlineDPOConfig(beta=beta, seed=seed, progress=False))
    out["online DPO (fresh pairs)"] = _mass_report(evaluator, policy, off, beta)
    if ppo_policy is not None:
        out["PPO-GT"] = _mass_report(evaluator, ppo_policy, off, beta)
    out["measured_against"] = "the off-policy pairs: mass on answers that no hand-written pair shows"
    out["plain_dpo_config"] = PLAIN_DPO
    return out


def _mass_report(evaluator, policy, data, beta) -> dict:
    probs = evaluator.set_probs(policy)
    report = evaluator.evaluate_probs(probs, beta)
    return {**unseen_mass(evaluator, probs, data), "attainment": report["attainment"],
            "true_reward": report["true_reward"], "kl": report["kl"]}


def summarise(result: dict) -> str:
    """A Markdown table of medians over seeds, per method and beta."""
    lines = ["| method | beta | KL | true reward | optimal reward at that KL | efficiency | attainment "
             "| held-out attainment | coverage | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    from minirlhf.compare import optimal_reward_at_kl

    keys = sorted({(r["method"], r["beta"]) for r in result["runs"]}, key=lambda k: (k[0], k[1]))
    for method, beta in keys:
        runs = [r for r in result["runs"] if r["method"] == method and r["beta"] == beta]
        med = {k: statistics.median(r[k] for r in runs) for k in
               ("kl", "true_reward", "efficiency", "attainment", "attainment_held_out", "coverage",
                "seconds")}
        best = optimal_reward_at_kl(result["curve"], med["kl"])
        lines.append(f"| {method} | {beta} | {med['kl']:.3f} | {med['true_reward']:.3f} | {best:.3f} | "
                     f"{med['efficiency']:.3f} | {med['attainment']:.3f} | "
                     f"{med['attainment_held_out']:.3f} | "
                     f"{med['coverage']:.3f} | "
                     f"{med['seconds']:.1f} |")
    if "offpolicy" in result:
        lines += ["", f"Off-policy experiment (beta {result['offpolicy_beta']}), measured against "
                  f"{result['offpolicy']['measured_against']}:", "",
                  "| policy | mass on unseen candidates | of which wrong answers | mass outside the set "
                  "| attainment |", "|---|---|---|---|---|"]
        ref = result["offpolicy"]["reference"]["off-policy pairs"]
        lines.append(f"| pi_ref | {ref['unseen_candidates']:.3f} | {ref['unseen_wrong']:.3f} | "
                     f"{ref['outside']:.3f} | 0 |")
        for name, r in result["offpolicy"].items():
            if isinstance(r, dict) and "attainment" in r:
                lines.append(f"| {name} | {r['unseen_candidates']:.3f} | {r['unseen_wrong']:.3f} | "
                             f"{r['outside']:.3f} | {r['attainment']:.3f} |")
    return "\n".join(lines)


def save_figure(result: dict, path: Path) -> None:
    """The sweep's points on the exact optimal curve (the README's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    from minirlhf.plots import plot_frontier

    points = {}
    for run in result["runs"]:
        points.setdefault(run["method"], []).append((run["kl"], run["true_reward"]))
    fig = plot_frontier(result["curve"], points,
                        title="Training prompts: true reward vs KL(pi || pi_ref) over a beta sweep")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def keep_previous(result: dict, previous: dict, rerun: list[str]) -> None:
    """Fill ``result`` (a run of the methods ``rerun`` only) with the other methods' results from
    ``previous`` (an earlier, complete frontier.json), in the order of a full run."""
    order = ["PPO-GT", "PPO-RM", "DPO", "Online DPO"]
    runs = result["runs"] + [r for r in previous["runs"] if r["method"] not in rerun]
    result["runs"] = sorted(runs, key=lambda r: (r["beta"], order.index(r["method"]), r["seed"]))
    probs = {**previous["france"]["probs"], **result["france"]["probs"]}
    names = ["pi_ref", *[n for n in probs if n.startswith("pi*")], *[m for m in order if m in probs]]
    result["france"]["probs"] = {name: probs[name] for name in names}
    if "PPO-GT" not in rerun and "PPO-GT" in previous.get("offpolicy", {}):
        result["offpolicy"]["PPO-GT"] = previous["offpolicy"]["PPO-GT"]
        result["offpolicy"] = {k: result["offpolicy"][k] for k in previous["offpolicy"]}  # same order
    kept_from = previous["command"]
    result["command"] += f" --keep-others  (the other methods' results from: {kept_from})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["PPO-GT", "PPO-RM", "DPO", "Online DPO"])
    parser.add_argument("--offpolicy-beta", type=float, default=0.1)
    parser.add_argument("--notebook-cache", action="store_true",
                        help="also write minirlhf/cached_runs/frontier.json for notebook 05")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-others", action="store_true",
                        help="rerun only --methods, keep the other methods' results from frontier.json")
    parser.add_argument("--ppo-steps", type=int, default=None, help="fewer PPO steps, for a smoke run only")
    args = parser.parse_args()
    global PPO_STEPS
    PPO_STEPS = args.ppo_steps
    torch.set_num_threads(args.threads)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "frontier.json").read_text()) if args.keep_others else None
    result, kept = sweep(args.betas, args.seeds, args.methods, args.offpolicy_beta)
    result["offpolicy_beta"] = args.offpolicy_beta
    result["france"] = france_distributions(kept, args.offpolicy_beta)
    if "PPO-GT" in kept or previous:
        result["offpolicy"] = offpolicy_experiment(args.offpolicy_beta, args.seeds[0], kept.get("PPO-GT"))
    result["command"] = "python benchmarks/frontier.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k not in ("notebook_cache", "keep_others") and v is not None)
    if previous:
        keep_previous(result, previous, args.methods)
    (out / "frontier.json").write_text(json.dumps(result, indent=1))
    table = summarise(result)
    (out / "frontier.md").write_text(table + "\n")
    save_figure(result, out / "frontier.png")
    print(table)
    if args.notebook_cache:
        (ROOT / "minirlhf" / "cached_runs" / "frontier.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
