"""The pipeline picture of the landing page, drawn with matplotlib (no downloads, no tools).

``python docs/_ext/pipeline_figure.py out.svg`` draws it; the docs build calls
:func:`draw_pipeline` and writes ``docs/_generated/pipeline.svg``.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

COLORS = {"data": "#eeeeee", "sft": "#cfe2f3", "rm": "#fce5cd", "ppo": "#d9ead3", "dpo": "#e6d9f2",
          "out": "#fff2cc"}


def _box(ax, x, y, w, h, title, subtitle, color):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="#555555", linewidth=1.0))
    ax.text(x, y + 0.13, title, ha="center", va="center", fontsize=10.5, fontweight="bold")
    ax.text(x, y - 0.17, subtitle, ha="center", va="center", fontsize=8, color="#333333")


def _arrow(ax, start, end, label="", label_xy=None, rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, linewidth=1.2,
                                 color="#444444", connectionstyle=f"arc3,rad={rad}"))
    if label:
        x, y = label_xy or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.15)
        ax.text(x, y, label, ha="center", va="bottom", fontsize=8, style="italic", color="#333333")


def draw_pipeline():
    """The four stages on one page: SFT, then either reward model + PPO, or DPO."""
    fig, ax = plt.subplots(figsize=(8.6, 3.9))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    w, h = 1.7, 0.7
    _box(ax, 0.95, 2.5, w, h, "Tiny GPT", "random weights", COLORS["data"])
    _box(ax, 3.05, 2.5, w, h, "SFT model", "= reference " + r"$\pi_{\mathrm{ref}}$", COLORS["sft"])
    _box(ax, 5.3, 3.45, w, h, "Reward model", "Bradley-Terry on pairs", COLORS["rm"])
    _box(ax, 7.45, 3.45, w, h, "PPO", r"max reward $-\ \beta\,$KL", COLORS["ppo"])
    _box(ax, 6.35, 1.55, w, h, "DPO", "pairs only: no RM,\nno sampling", COLORS["dpo"])
    _box(ax, 9.1, 2.5, 1.45, h, "Aligned", "policy " + r"$\pi_\theta$", COLORS["out"])
    _arrow(ax, (1.8, 2.5), (2.2, 2.5))
    ax.text(2.0, 2.05, "1. SFT on\ndemonstrations", ha="center", va="top", fontsize=8, style="italic")
    _arrow(ax, (3.9, 2.75), (4.45, 3.35), "2. rate pairs", (3.7, 3.2))
    _arrow(ax, (6.15, 3.45), (6.6, 3.45), "3. RL", (6.37, 3.85))
    _arrow(ax, (3.9, 2.25), (5.5, 1.6), "same pairs", (4.5, 1.45))
    _arrow(ax, (8.3, 3.3), (8.6, 2.8))
    _arrow(ax, (7.2, 1.7), (8.6, 2.25))
    ax.annotate("", xy=(7.3, 3.08), xytext=(3.7, 2.85), arrowprops={
        "arrowstyle": "-|>", "linestyle": "--", "color": "#888888", "connectionstyle": "arc3,rad=0.2"})
    ax.text(5.6, 2.3, r"KL penalty: stay close to $\pi_{\mathrm{ref}}$", fontsize=8, color="#666666",
            ha="center")
    ax.text(0.1, 0.75, "Q: What is the capital of France? A:", fontsize=8.5, family="monospace")
    ax.text(0.1, 0.4, "before:  There are several capitals, but Paris is the official capital.  "
            "(or: ... is Berlin.)", fontsize=8, family="monospace", color="#a33")
    ax.text(0.1, 0.08, "after:   The capital of France is Paris.", fontsize=8, family="monospace",
            color="#2a7a2a")
    fig.tight_layout(pad=0.2)
    return fig


def main(argv: list[str]) -> None:
    """Save the figure to the path given on the command line."""
    path = argv[1] if len(argv) > 1 else "pipeline.svg"
    with matplotlib.rc_context({"svg.hashsalt": "minirlhf", "svg.fonttype": "path"}):
        draw_pipeline().savefig(path, metadata={"Date": None})
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv)
