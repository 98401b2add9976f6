"""Estimate how long a careful first read of each notebook takes, calibrated on a measured read.

    python scripts/reading_time.py            # a table: words, code lines, estimated minutes
    python scripts/reading_time.py --json benchmarks/results/reading_time.json

The estimate is minutes = a * (words of prose) + b * (lines of code), with a and b fitted by
non-negative least squares to one student's timed first read of notebooks 01-06 (the times and
the notebooks' counts at that read are in ``CALIBRATION`` below; the read is reported in issue 32).
It is a model of one reader, not a measurement of yours: it says whether a rewrite made a notebook
shorter to read, and roughly by how much.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_sft_tiny_gpt", "02_reward_model", "03_ppo_with_kl", "04_dpo", "05_ppo_vs_dpo",
             "06_beyond_ppo", "07_variants"]

# One student's careful first read (minutes), and the notebooks' prose words and code lines then
# (counted by ``counts`` at commit cfb979a).
CALIBRATION = {
    "01_sft_tiny_gpt": {"minutes": 30, "words": 1156, "code_lines": 133},
    "02_reward_model": {"minutes": 50, "words": 1747, "code_lines": 187},
    "03_ppo_with_kl": {"minutes": 85, "words": 2433, "code_lines": 254},
    "04_dpo": {"minutes": 55, "words": 1718, "code_lines": 168},
    "05_ppo_vs_dpo": {"minutes": 45, "words": 1017, "code_lines": 159},
    "06_beyond_ppo": {"minutes": 65, "words": 1453, "code_lines": 150},
}


def counts(notebook: Path) -> dict[str, int]:
    """Words in the Markdown cells and non-blank, non-comment lines in the code cells."""
    cells = json.loads(notebook.read_text())["cells"]
    words = sum(len(re.findall(r"\w+", "".join(c["source"]))) for c in cells if c["cell_type"] == "markdown")
    code = sum(1 for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()
               if line.strip() and not line.strip().startswith("#"))
    return {"words": words, "code_lines": code}


def rates() -> tuple[float, float]:
    """Minutes per word of prose and per line of code, fitted to ``CALIBRATION``."""
    rows = list(CALIBRATION.values())
    a = np.array([[r["words"], r["code_lines"]] for r in rows], dtype=float)
    t = np.array([r["minutes"] for r in rows], dtype=float)
    (per_word, per_line), _ = nnls(a, t)
    return float(per_word), float(per_line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the table to this file")
    args = parser.parse_args()
    per_word, per_line = rates()
    table = {}
    for name in NOTEBOOKS:
        c = counts(ROOT / "notebooks" / f"{name}.ipynb")
        read = CALIBRATION.get(name, {}).get("minutes")  # None: not in the calibration read
        table[name] = {**c, "minutes": round(per_word * c["words"] + per_line * c["code_lines"], 1),
                       "minutes_at_calibration": read}
        print(f"{name:18s} {c['words']:5d} words {c['code_lines']:4d} code lines  "
              f"~{table[name]['minutes']:5.1f} min" + (f" (read at calibration: {read} min)" if read else ""))
    core = sum(table[n]["minutes"] for n in NOTEBOOKS[:5])
    print(f"01-05 together: ~{core:.0f} min; rates {per_word * 1000:.1f} min per 1000 words, "
          f"{per_line * 100:.1f} min per 100 code lines")
    if args.json:
        misfit = max(abs(per_word * c["words"] + per_line * c["code_lines"] - c["minutes"])
                     for c in CALIBRATION.values())
        result = {"rates": {"minutes_per_word": per_word, "minutes_per_code_line": per_line},
                  "calibration_largest_difference_minutes": round(misfit, 1),
                  "notebooks": table, "core_01_05_minutes": round(core, 1)}
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
