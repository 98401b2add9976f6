"""The ``minirlhf`` command line (argument parsing only; the work is in :mod:`minirlhf.pipeline`)::

    minirlhf demo [--out DIR] [--quick] [--seed N] [--retrain]
        the whole pipeline, report.html in DIR
    minirlhf sft --out DIR [--steps N] [--seed N]
        train the SFT base model and save it
    minirlhf export --format trl|openrlhf|verl --out DIR
        the world's data for another library
    minirlhf exercises export --format otter DIR
        the exercises as Otter-Grader assignments

Every command takes ``--threads N`` (default 1, or the environment variable ``MINIRLHF_THREADS``).
``minirlhf COMMAND --help`` lists each command's options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")  # the CLI only writes files: set before pyplot is imported

from minirlhf import export, pipeline  # noqa: E402
from minirlhf.checkpoint_files import check_save_target  # noqa: E402
from minirlhf.checks import check_seed  # noqa: E402
from minirlhf.exercises import autograde  # noqa: E402
from minirlhf.files import BusyError, RunLock, check_free_space, is_disk_full  # noqa: E402
from minirlhf.saved_models import save_model  # noqa: E402
from minirlhf.sft import SFTConfig  # noqa: E402
from minirlhf.training import DEFAULT_THREADS, set_threads  # noqa: E402


def seed_argument(text: str) -> int:
    """``--seed``: an integer from 0 to 2**32 - 1."""
    try:
        return check_seed(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error) if text.strip().lstrip("-").isdigit()
                                         else f"must be an integer, got {text!r}") from error


def threads_argument(text: str) -> int:
    """``--threads``: a whole number of CPU threads from 1 to the machine's count."""
    if not text.strip().isdigit() or not 1 <= int(text) <= (os.cpu_count() or 1):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to this machine's "
                                         f"{os.cpu_count()} CPUs, got {text!r}")
    return int(text)


def default_threads() -> int:
    """``MINIRLHF_THREADS`` if set, else :data:`~minirlhf.training.DEFAULT_THREADS`."""
    return threads_argument(os.environ.get("MINIRLHF_THREADS", str(DEFAULT_THREADS)))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``minirlhf`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=threads_argument, default=None,
                        help=f"CPU threads torch computes with (default {DEFAULT_THREADS}, or "
                             "MINIRLHF_THREADS: the model is so small that more threads mostly wait on "
                             "each other)")
    parser = argparse.ArgumentParser(prog="minirlhf", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", parents=[common],
                                      help="run the whole pipeline and write a report")
    demo_parser.add_argument("--out", type=Path, default=Path("minirlhf-output"),
                             help="output folder: new, empty, or an earlier demo's (default: "
                                  "./minirlhf-output)")
    demo_parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    demo_parser.add_argument("--seed", type=seed_argument, default=0)
    demo_parser.add_argument("--retrain", action="store_true",
                             help="train the SFT base model again (by default seed 0 loads the shipped one)")
    sft_parser = commands.add_parser("sft", parents=[common], help="train the SFT base model and save it")
    sft_parser.add_argument("--out", type=Path, required=True, help="folder for the checkpoint")
    sft_parser.add_argument("--steps", type=int, default=None)
    sft_parser.add_argument("--seed", type=seed_argument, default=0)
    export_parser = commands.add_parser("export", parents=[common],
                                        help="write the SFT corpus, preference pairs and prompts "
                                        "in TRL's, OpenRLHF's or verl's format")
    export_parser.add_argument("--format", required=True, choices=export.FORMATS, dest="fmt")
    export_parser.add_argument("--out", type=Path, required=True,
                               help="output folder (new, empty, or an earlier export's)")
    autograde.add_command(commands)  # the classroom kit: its own parser and command
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minirlhf`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        threads = args.threads if getattr(args, "threads", None) is not None else default_threads()
    except argparse.ArgumentTypeError as error:
        parser.error(f"MINIRLHF_THREADS {error}")
    before = torch.get_num_threads()
    set_threads(threads)
    try:
        run(args, parser)
    except BusyError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except OSError as error:
        if not is_disk_full(error):
            raise
        parser.exit(1, f"{parser.prog}: error: {error.strerror}\n")
    finally:
        set_threads(before)  # main() called from Python leaves the caller's setting as it was
    return 0


def run(args, parser: argparse.ArgumentParser) -> None:
    """Run the command ``args`` asks for. Each checks its input first (a usage error), then works."""
    if args.command == "demo":
        try:  # demo() checks these too; here they become a usage error instead of a traceback
            pipeline.check_demo_target(args.out)
        except (ValueError, OSError) as error:
            parser.error(str(error))
        report = pipeline.demo(args.out, seed=args.seed, quick=args.quick, retrain=args.retrain)
        print(f"\nDone. Open the report: {report.resolve()}  (metrics.json and the figures are beside it)")
    elif args.command == "sft":
        try:
            config = SFTConfig(seed=args.seed, **({"steps": args.steps} if args.steps is not None else {}))
            # a folder that cannot take the checkpoint fails now, not after training
            target = check_save_target(args.out)
            check_free_space(target.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
        except (ValueError, OSError) as error:
            parser.error(str(error))
        with RunLock(target.parent / f".{target.name}.lock", f"the checkpoint {str(args.out)!r}"):
            check_save_target(target)  # again, under the lock
            model, tokenizer, history = pipeline.train_base_model(seed=args.seed, config=config)
            out = save_model(model, tokenizer, target, extra_files={"sft_history.json": json.dumps(history)})
        print(f"Saved the SFT model to {out} (final loss {history[-1]['loss']:.3f})")
    elif args.command == "export":
        try:
            export.check_export_target(args.out)
            check_free_space(args.out)
        except (ValueError, OSError) as error:
            parser.error(str(error))
        for path in export.export(args.fmt, args.out):
            print(path)
    elif args.command == "exercises":
        autograde.run_command(args, parser)


if __name__ == "__main__":
    sys.exit(main())
