"""Matplotlib figures used by the notebooks, the CLI and the docs.

Every function returns a ``matplotlib.figure.Figure`` (and never calls ``plt.show``), so the
same figure can be shown in a notebook or saved by the CLI. Figures are kept small.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(
    ("module://matplotlib_inline", "module://ipympl", "widget", "nbagg")) else None
import matplotlib.pyplot as plt  # noqa: E402

STYLE_COLORS = {"correct": "tab:green", "hedge": "tab:orange", "wrong": "tab:red",
                "hedge_wrong": "tab:purple", "malformed": "tab:gray", "outside": "tab:gray"}


def plot_history(history: list[dict], keys: list[str], title: str = "", x: str = "step",
                 ncols: int = 3):
    """One small panel per metric in ``keys``, drawn against ``x`` from a list-of-dicts history."""
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, min(ncols, len(keys)), figsize=(3.2 * min(ncols, len(keys)),
                             2.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(h[x], h[key]) for h in history if key in h]
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
