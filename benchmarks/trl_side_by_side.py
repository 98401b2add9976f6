"""TRL's own trainers against minirlhf's at the same settings, scored exactly (issue 20).

Run it with the python of a venv that has the ``trl`` extra (``pip install -e ".[trl]"``)::

    python benchmarks/trl_side_by_side.py                          # every method, seed 0, one thread
    python benchmarks/trl_side_by_side.py --methods grpo --grpo-steps 1000

Methods (each one seed, beta 0.1, the tutorial's data and the shipped SFT model):

* ``dpo``        minirlhf's offline DPO defaults (``DPOConfig()``: RPO's NLL term, the first block and
  the embeddings kept fixed): :func:`minirlhf.dpo.train_dpo` against ``examples/trl_dpo.py``, which
  gives TRL's ``DPOTrainer`` the same settings (:func:`minirlhf.integrations.trl.dpo_args`);
* ``dpo_plain``  the same with ``minirlhf.compare.PLAIN_DPO`` (``examples/trl_dpo.py --recipe plain``);
* ``grpo``       ``GRPOConfig(kl="loss", embedding_lr_scale=0, steps=--grpo-steps)`` with the true reward:
  :func:`minirlhf.grpo.train_grpo` against ``examples/trl_grpo.py`` (TRL's ``GRPOTrainer``).

The two implementations differ where TRL has no switch: TRL samples each GRPO batch's prompts without
replacement (minirlhf: with), and its random streams differ, so the same seed gives other samples.
Prints a Markdown table and writes ``benchmarks/results/trl_side_by_side.json``: exact attainment on the
training and held-out prompts, KL, P(correct) and wall seconds of each run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
import trl  # noqa: E402
from demo import cpu_model  # noqa: E402  (benchmarks/, beside this script)
import trl_dpo  # noqa: E402  (examples/)
import trl_grpo  # noqa: E402  (examples/)

from minirlhf import world  # noqa: E402
from minirlhf.compare import PLAIN_DPO  # noqa: E402
from minirlhf.dpo import DPOConfig, train_dpo  # noqa: E402
from minirlhf.grpo import GRPOConfig, train_grpo  # noqa: E402
from minirlhf.saved_models import load_base_model  # noqa: E402
from minirlhf.optimum import ExactEvaluator  # noqa: E402
from minirlhf.preferences import default_preferences  # noqa: E402

BETA = 0.1
KEYS = {"attainment": "exact/attainment", "held_out_attainment": "exact_held_out/attainment",
        "kl": "exact/kl", "p_correct": "exact/p_correct"}


def minirlhf_run(method: str, seed: int, grpo_steps: int, ref, tokenizer) -> dict:
    """minirlhf's own trainer: exact figures of the trained policy and the wall seconds."""
    start = time.perf_counter()
    if method == "grpo":
        config = GRPOConfig(beta=BETA, seed=seed, steps=grpo_steps, progress=False, **trl_grpo.RECIPE)
        policy, _ = train_grpo(copy.deepcopy(ref), ref, tokenizer, world.prompts("train"), config)
    else:
        recipe = PLAIN_DPO if method == "dpo_plain" else {}
        config = DPOConfig(beta=BETA, seed=seed, progress=False, **recipe)
        data = default_preferences(seed=seed, progress=False)["train"]
        policy, _ = train_dpo(copy.deepcopy(ref), ref, tokenizer, data, config)
    seconds = time.perf_counter() - start
    train = ExactEvaluator(ref, tokenizer, world.prompts("train")).evaluate(policy, BETA)
    held_out = ExactEvaluator(ref, tokenizer, world.prompts("held_out")).evaluate(policy, BETA)
    return {"attainment": train["attainment"], "held_out_attainment": held_out["attainment"],
            "kl": train["kl"], "p_correct": train["p_correct"], "seconds": seconds}


def trl_run(method: str, seed: int, grpo_steps: int, threads: int, out: str) -> dict:
    """TRL's trainer through the example script: its last exact evaluation and the wall seconds."""
    common = ["--seed", str(seed), "--threads", str(threads), "--out", out, "--beta", str(BETA)]
    start = time.perf_counter()
    if method == "grpo":
        final = trl_grpo.main(common + ["--steps", str(grpo_steps), "--eval-every", "0"])
    else:
        final = trl_dpo.main(common + ["--recipe", "plain" if method == "dpo_plain" else "minirlhf",
                                       "--eval-every", "0"])
    return {**{key: final[name] for key, name in KEYS.items()}, "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["dpo", "dpo_plain", "grpo"],
                        choices=["dpo", "dpo_plain", "grpo"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grpo-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "trl_side_by_side.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref, tokenizer = load_base_model()

    rows = []
    for method in args.methods:
        for library in ("minirlhf", "trl"):
            if library == "minirlhf":
                result = minirlhf_run(method, args.seed, args.grpo_steps, ref, tokenizer)
            else:
                result = trl_run(method, args.seed, args.grpo_steps, args.threads,
                                 str(ROOT / "trl-side-by-side"))
            rows.append({"method": method, "library": library, "seed": args.seed, "beta": BETA,
                         **{k: round(v, 4) for k, v in result.items()}})
            print(json.dumps(rows[-1]), flush=True)

    print("\n| method | library | attainment (held-out) | KL | P(correct) | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['library']} | {r['attainment']:.3f} ({r['held_out_attainment']:.3f}) | "
              f"{r['kl']:.3f} | {r['p_correct']:.3f} | {r['seconds']:.0f} |")
    args.out.write_text(json.dumps({
        "rows": rows, "grpo_steps": args.grpo_steps, "threads": args.threads,
        "trl_version": trl.__version__, "torch_version": torch.__version__, "cpu": cpu_model(),
        "command": " ".join(["python benchmarks/trl_side_by_side.py", *(argv or sys.argv[1:])])},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
