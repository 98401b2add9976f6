"""The ``minirlhf`` command line: ``minirlhf demo`` runs the pipeline, stage commands run one stage.

    minirlhf demo [--out DIR] [--quick] [--seed N]   the whole pipeline, figures + report in DIR
    minirlhf sft --out DIR [--steps N] [--seed N]     train the SFT base model and save it
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the CLI only writes files


def sft_stage(outdir: Path, seed: int = 0, quick: bool = False) -> dict:
    """Train the SFT base model from scratch, save it and its figures; return the metrics."""
    from minirlhf import world
    from minirlhf.models import save_model
    from minirlhf.optimum import ExactEvaluator, answer_kind_probs
    from minirlhf.plots import plot_answer_kinds, plot_history, save_figures
    from minirlhf.sft import SFTConfig, train_base_model

    config = SFTConfig(seed=seed, steps=60 if quick else SFTConfig.steps)
    start = time.perf_counter()
    model, tokenizer, history = train_base_model(seed=seed, config=config)
    seconds = time.perf_counter() - start
    save_model(model, tokenizer, outdir / "sft-model")
    countries = [c for c, _ in world.COUNTRIES]
    kinds = answer_kind_probs(model, tokenizer, [world.make_prompt(c) for c in countries])
    figures = save_figures({
        "sft_loss.png": plot_history(history, ["loss"], title="SFT loss (response tokens)"),
        "sft_answer_distribution.png": plot_answer_kinds(kinds, countries,
                                                         "SFT model: exact answer distribution"),
    }, outdir)
    france = world.COUNTRIES.index(("France", "Paris"))
    evaluator = ExactEvaluator(model, tokenizer, world.prompts("train"))
    return {
        "steps": config.steps,
        "seconds": round(seconds, 1),
        "final_loss": history[-1]["loss"],
        "france_answer_mix": {k: round(float(v[france]), 3) for k, v in kinds.items()},
        "corpus_mix": world.STYLE_MIX,
        "coverage": evaluator.evaluate(model, beta=1.0)["coverage"],
        "figures": figures,
    }


def demo(outdir: Path, seed: int = 0, quick: bool = False) -> Path:
    """Run every stage, write figures, ``metrics.json`` and ``report.md`` into ``outdir``.

    SFT is trained from scratch here, to show it; the later stages start from the shipped base
    model, which ``minirlhf sft`` reproduces with the same seed.
    """
    from minirlhf import compare, dpo, ppo, reward

    outdir.mkdir(parents=True, exist_ok=True)
    metrics = {"seed": seed, "quick": quick}
    timer = time.perf_counter()
    print("== Stage 1/5: supervised fine-tuning (SFT) ==", flush=True)
    metrics["sft"] = sft_stage(outdir, seed=seed, quick=quick)
    print("== Stage 2/5: preferences and the reward model ==", flush=True)
    stage = reward.demo_stage(outdir, quick=quick)
    reward_model, preferences = stage.pop("reward_model"), stage.pop("preferences")
    stage.pop("tokenizer")
    metrics["reward_model"] = stage
    seconds, policies = {}, {}
    print("== Stage 3/5: PPO with a KL penalty ==", flush=True)
    start = time.perf_counter()
    stage = ppo.demo_stage(outdir, reward_model=reward_model, quick=quick, reward_data=preferences["train"])
    policies["PPO"], seconds["PPO"] = stage.pop("policy"), time.perf_counter() - start
    metrics["ppo"] = stage
    print("== Stage 4/5: DPO on the same preferences ==", flush=True)
    start = time.perf_counter()
    stage = dpo.demo_stage(outdir, preferences, quick=quick)
    policies["DPO"], seconds["DPO"] = stage.pop("policy"), time.perf_counter() - start
    metrics["dpo"] = stage
    print("== Stage 5/5: PPO and DPO against the exact optimum ==", flush=True)
    beta = metrics["ppo"].get("beta", 0.1)
    metrics["comparison"] = compare.demo_stage(outdir, policies, seconds, beta)
    print(metrics["comparison"]["table_markdown"])
    metrics["total_seconds"] = round(time.perf_counter() - timer, 1)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    write_report(outdir, metrics)
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
        figures = [name for key, value in values.items() if key.endswith("figures") for name in value]
        if "table_markdown" in values:
            lines += [values["table_markdown"], ""]
        for key, value in values.items():
            if not key.endswith(("figures", "table", "table_markdown")):
                lines.append(f"- **{key}**: {json.dumps(value, default=str)}")
        lines.append("")
        lines += [f"![{name}]({name})" for name in figures]
        lines.append("")
    path = outdir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minirlhf`` console script."""
    parser = argparse.ArgumentParser(prog="minirlhf", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the whole pipeline and write a report")
    demo_parser.add_argument("--out", type=Path, default=Path("minirlhf-output"),
                             help="output folder (default: ./minirlhf-output)")
    demo_parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    demo_parser.add_argument("--seed", type=int, default=0)
    sft_parser = commands.add_parser("sft", help="train the SFT base model and save it")
    sft_parser.add_argument("--out", type=Path, required=True, help="folder for the checkpoint")
    sft_parser.add_argument("--steps", type=int, default=None)
    sft_parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "demo":
        outdir = demo(args.out, seed=args.seed, quick=args.quick)
        print(f"\nDone. Figures, metrics.json and report.md are in {outdir.resolve()}")
    elif args.command == "sft":
        from minirlhf.models import save_model
        from minirlhf.sft import SFTConfig, train_base_model

        config = SFTConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
        model, tokenizer, history = train_base_model(seed=args.seed, config=config)
        save_model(model, tokenizer, args.out)
        (args.out / "sft_history.json").write_text(json.dumps(history))
        print(f"Saved the SFT model to {args.out.resolve()} (final loss {history[-1]['loss']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
