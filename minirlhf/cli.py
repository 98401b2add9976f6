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


def _save_figure(fig, outdir: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    path = outdir / name
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path.name


def sft_stage(outdir: Path, seed: int = 0, quick: bool = False) -> dict:
    """Train the SFT base model from scratch, save it and its figures; return the metrics."""
    from minirlhf import world
    from minirlhf.models import save_model
    from minirlhf.optimum import ExactEvaluator, answer_kind_probs
    from minirlhf.plots import plot_answer_kinds, plot_history
    from minirlhf.sft import SFTConfig, train_base_model

    config = SFTConfig(seed=seed, steps=60 if quick else SFTConfig.steps)
    start = time.perf_counter()
    model, tokenizer, history = train_base_model(seed=seed, config=config)
    seconds = time.perf_counter() - start
    save_model(model, tokenizer, outdir / "sft-model")
    countries = [c for c, _ in world.COUNTRIES]
    kinds = answer_kind_probs(model, tokenizer, [world.make_prompt(c) for c in countries])
    figures = [
        _save_figure(plot_history(history, ["loss"], title="SFT loss (response tokens)"),
                     outdir, "sft_loss.png"),
        _save_figure(plot_answer_kinds(kinds, countries, "SFT model: exact answer distribution"),
                     outdir, "sft_answer_distribution.png"),
    ]
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
    """Run every stage, write figures, ``metrics.json`` and ``report.md`` into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    metrics = {"seed": seed, "quick": quick}
    print("== Stage 1: supervised fine-tuning (SFT) ==")
    metrics["sft"] = sft_stage(outdir, seed=seed, quick=quick)
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(outdir, metrics)
    return outdir


def write_report(outdir: Path, metrics: dict) -> Path:
    """A Markdown report with every figure and the headline numbers of each stage."""
    lines = ["# minirlhf demo report", ""]
    for stage, values in metrics.items():
        if not isinstance(values, dict):
            continue
        lines += [f"## {stage}", ""]
        for key, value in values.items():
            if key != "figures":
                lines.append(f"- **{key}**: {json.dumps(value)}")
        lines.append("")
        lines += [f"![{name}]({name})" for name in values.get("figures", [])]
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
