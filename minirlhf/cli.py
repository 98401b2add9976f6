"""The ``minirlhf`` command line (argument parsing only; the work is in :mod:`minirlhf.pipeline`)::

    minirlhf demo [--out DIR] [--quick] [--seed N] [--retrain]   the whole pipeline, report.html in DIR
    minirlhf sft --out DIR [--steps N] [--seed N]     train the SFT base model and save it
    minirlhf export --format trl|openrlhf|verl --out DIR   the world's data for another library
    minirlhf exercises export --format otter DIR       the exercises as Otter-Grader assignments

``minirlhf COMMAND --help`` lists each command's options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the CLI only writes files: set before pyplot is imported

from minirlhf import export, pipeline  # noqa: E402
from minirlhf.models import save_model  # noqa: E402
from minirlhf.sft import SFTConfig  # noqa: E402
from minirlhf.utils import check_save_target, check_writable  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minirlhf`` console script."""
    parser = argparse.ArgumentParser(prog="minirlhf", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the whole pipeline and write a report")
    demo_parser.add_argument("--out", type=Path, default=Path("minirlhf-output"),
                             help="output folder (default: ./minirlhf-output)")
    demo_parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument("--retrain", action="store_true",
                             help="train the SFT base model again (by default seed 0 loads the shipped one)")
    sft_parser = commands.add_parser("sft", help="train the SFT base model and save it")
    sft_parser.add_argument("--out", type=Path, required=True, help="folder for the checkpoint")
    sft_parser.add_argument("--steps", type=int, default=None)
    sft_parser.add_argument("--seed", type=int, default=0)
    export_parser = commands.add_parser("export", help="write the SFT corpus, preference pairs and prompts "
                                        "in TRL's, OpenRLHF's or verl's format")
    export_parser.add_argument("--format", required=True, choices=export.FORMATS, dest="fmt")
    export_parser.add_argument("--out", type=Path, required=True,
                               help="output folder (new, empty, or an earlier export's)")
    from minirlhf.exercises import autograde  # the classroom kit: its own parser and command

    autograde.add_command(commands)
    args = parser.parse_args(argv)

    if args.command == "demo":
        try:  # demo() checks these too; here they become a usage error instead of a traceback
            check_writable(args.out)
            check_save_target(args.out / "sft-model")
        except (ValueError, OSError) as error:
            parser.error(str(error))
        report = pipeline.demo(args.out, seed=args.seed, quick=args.quick, retrain=args.retrain)
        print(f"\nDone. Open the report: {report.resolve()}  (metrics.json and the figures are beside it)")
    elif args.command == "sft":
        try:
            config = SFTConfig(seed=args.seed, **({"steps": args.steps} if args.steps is not None else {}))
            check_save_target(args.out)  # a folder that cannot take the checkpoint fails now, not later
        except (ValueError, OSError) as error:
            parser.error(str(error))
        model, tokenizer, history = pipeline.train_base_model(seed=args.seed, config=config)
        out = save_model(model, tokenizer, args.out, extra_files={"sft_history.json": json.dumps(history)})
        print(f"Saved the SFT model to {out} (final loss {history[-1]['loss']:.3f})")
    elif args.command == "export":
        try:
            export.check_export_target(args.out)
        except (ValueError, OSError) as error:
            parser.error(str(error))
        for path in export.export(args.fmt, args.out):
            print(path)
    elif args.command == "exercises":
        return autograde.run_command(args, parser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
