"""Does the way prompts are drawn explain the held-out gap between TRL's GRPOTrainer and minirlhf?

    nice -n 5 python benchmarks/prompt_drawing.py --threads 1

On the training countries TRL's ``GRPOTrainer`` and minirlhf's ``train_grpo`` at the same config agree;
on the held-out ones TRL's runs attain more (``benchmarks/results/scoreboard.json``, ``impl`` ``trl``
against ``minirlhf-pair``). TRL's sampler gives each step distinct prompts (the first 16 of a fresh
shuffle of the 20 training countries); minirlhf draws them with replacement. This runs minirlhf's
pair config (``TRL_RECIPE``, ``loss_type="grpo"``, the scoreboard's budget) both ways, over seeds, and
writes the exact attainments to ``benchmarks/results/prompt_drawing.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoreboard import BETA, RESULTS, TRL_RECIPE, exact_evaluators, grpo_config, measure  # noqa: E402

from minirlhf import world  # noqa: E402
from minirlhf.compare import frontier_curve  # noqa: E402
from minirlhf.grpo import train_grpo  # noqa: E402
from minirlhf.saved_models import load_base_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--loss-type", default="grpo")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "prompt_drawing.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_at_start = list(os.getloadavg())
    ref, tokenizer = load_base_model()
    evaluators = exact_evaluators(ref, tokenizer)
    curve = frontier_curve(evaluators["train"])
    runs = []
    for drawing in ("with_replacement", "distinct"):
        for seed in args.seeds:
            extra = {**TRL_RECIPE, "loss_type": args.loss_type, "distinct_prompts": drawing == "distinct"}
            policy = copy.deepcopy(ref)
            start = time.perf_counter()
            config = grpo_config("", seed, args.steps, extra)
            train_grpo(policy, ref, tokenizer, world.prompts("train"), config)
            row = {"drawing": drawing, "seed": seed, "seconds": time.perf_counter() - start,
                   **measure(policy, evaluators, tokenizer, curve)}
            runs.append(row)
            print(f"{drawing:16s} seed {seed}: attainment {row['train_attainment']:.3f} "
                  f"(held out {row['held_out_attainment']:.3f})", flush=True)
    summary = {}
    for drawing in ("with_replacement", "distinct"):
        mine = [r for r in runs if r["drawing"] == drawing]
        summary[drawing] = {f"{k}_{f.__name__}": f(r[k] for r in mine)
                            for k in ("train_attainment", "held_out_attainment") for f in (min, max)}
        for k in ("train_attainment", "held_out_attainment"):
            summary[drawing][f"{k}_median"] = statistics.median(r[k] for r in mine)
    result = {"beta": BETA, "steps": args.steps, "loss_type": args.loss_type, "seeds": args.seeds,
              "recipe": TRL_RECIPE, "load_average_at_start": load_at_start,
              "load_average_at_end": list(os.getloadavg()), "runs": runs, "summary": summary}
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
