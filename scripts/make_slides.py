"""Make the slides of the 90-minute class ("From Berlin to Paris") from the notebooks.

The deck follows the class plan of the teachers' page: for each part, the notebook's title and the
sections the students read, each section a slide with its prose and the figures and tables the
notebook stored (nothing is run again, no code is shown), then the discussion. It is a reveal.js
deck made by nbconvert: one HTML file, the figures inside it.

Usage::

    python scripts/make_slides.py                    # writes build/slides/class_90min.slides.html
    python scripts/make_slides.py --out DIR          # elsewhere
    python scripts/make_slides.py --reveal-prefix reveal.js   # a local copy of reveal.js (offline)

Open the file in a browser; arrow keys move, F goes full screen, S opens the speaker view. By
default reveal.js itself is loaded from a CDN, as nbconvert does; in a room without internet, put
a copy of reveal.js beside the deck and pass its folder as ``--reveal-prefix``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

# The class, part by part: (notebook, the numbered sections shown, what the students do meanwhile).
CLASS_PLAN = [
    ("01_sft_tiny_gpt", [1, 5, 6], "0-15 min: Run All in notebook 01"),
    ("02_reward_model", [1, 3, 5, 6], "15-30 min: Run All in notebook 02 first"),
    ("03_ppo_with_kl", [3, 6, 7, 9], "30-50 min: Run All in notebook 03 first"),
    ("exercises/05_dpo_loss", ["Part 2: the DPO loss"], "50-75 min: exercise 5, the DPO loss"),
    ("04_dpo", [2], "75-85 min: read the stored outputs"),
    ("05_ppo_vs_dpo", [1, 5], "75-85 min: read the stored outputs"),
]
DISCUSSION = """## Discussion

* **DPO has no reward model. Where did the reward go?**
* **PPO: what goes wrong with $\\beta = 0$** against a learned reward model?"""

SHOWN = ("image/png", "image/svg+xml", "text/html")
"""The kinds of stored output a slide shows (besides short printed text)."""
SECTION = re.compile(r"^## (?:(\d+)\. )?(.+)$", re.MULTILINE)


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _cell(cell_type: str, source: str, slide_type: str, outputs: list | None = None) -> dict:
    cell = {"cell_type": cell_type, "metadata": {"slideshow": {"slide_type": slide_type}},
            "source": source.splitlines(keepends=True)}
    if cell_type == "code":
        cell.update(outputs=outputs or [], execution_count=None)
    return cell


def _shown_outputs(cell: dict) -> list:
    """A code cell's stored figures, tables and short printed text (no tracebacks, no widgets)."""
    kept = []
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if output["output_type"] == "stream" and len("".join(output.get("text", ""))) < 1500:
            kept.append(output)
        elif any(key in data for key in SHOWN):
            kept.append({**output, "data": {k: v for k, v in data.items() if k in (*SHOWN, "text/plain")}})
    return kept


def sections(notebook: dict) -> dict:
    """The notebook's ``## N. Title`` sections: {N or title: [cells]} (the heading cell first)."""
    found, current = {}, None
    for cell in notebook["cells"]:
        heading = SECTION.match(_source(cell)) if cell["cell_type"] == "markdown" else None
        if heading:
            current = int(heading.group(1)) if heading.group(1) else heading.group(2).strip()
            found[current] = []
        if current is not None:
            found[current].append(cell)
    return found


def title_of(notebook: dict) -> str:
    """The first ``# `` heading of the notebook."""
    for cell in notebook["cells"]:
        for line in _source(cell).splitlines():
            if cell["cell_type"] == "markdown" and line.startswith("# "):
                return line[2:].strip()
    raise ValueError("The notebook has no '# ' title.")


def slides(plan=CLASS_PLAN, root: Path = NOTEBOOKS) -> dict:
    """The deck as a notebook whose cells carry reveal.js slide types."""
    cells = [_cell("markdown", "# From Berlin to Paris\n\nA 90-minute class on aligning a language model "
                   "with human preferences: SFT, a reward model, PPO with a KL penalty, DPO.\n\n"
                   "*minirlhf: every number here is computed exactly on a toy world.*", "slide")]
    for name, wanted, doing in plan:
        path = root / f"{name}.ipynb"
        notebook = json.loads(path.read_text(encoding="utf-8"))
        found = sections(notebook)
        missing = [key for key in wanted if key not in found]
        if missing:
            raise ValueError(f"{path} has no section {missing}: the class plan in {__file__} names "
                             f"{wanted}, the notebook has {list(found)}.")
        cells.append(_cell("markdown", f"# {title_of(notebook)}\n\n*{doing}*", "slide"))
        for key in wanted:
            for index, cell in enumerate(found[key]):
                if cell["cell_type"] == "markdown":
                    cells.append(_cell("markdown", _source(cell), "subslide" if index else "slide"))
                elif cell["cell_type"] == "code" and _shown_outputs(cell):
                    cells.append(_cell("code", _source(cell), "subslide", _shown_outputs(cell)))
    cells.append(_cell("markdown", DISCUSSION, "slide"))
    for index, cell in enumerate(cells):
        cell["id"] = f"slide-{index}"
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def build(out: Path, reveal_prefix: str | None = None) -> Path:
    """Write the deck to ``out/class_90min.slides.html``; returns its path."""
    import nbformat
    from nbconvert import SlidesExporter

    deck = nbformat.reads(json.dumps(slides()), as_version=4)
    exporter = SlidesExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    if reveal_prefix:
        exporter.reveal_url_prefix = reveal_prefix
    html, _ = exporter.from_notebook_node(deck)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "class_90min.slides.html"
    target.write_text(html, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "slides",
                        help="folder for the deck (default: build/slides/)")
    parser.add_argument("--reveal-prefix", default=None,
                        help="where the deck loads reveal.js from (default: nbconvert's CDN)")
    args = parser.parse_args(argv)
    print(f"wrote {build(args.out, args.reveal_prefix)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
