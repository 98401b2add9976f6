"""Render the site's math offline, as SVG images drawn by matplotlib's mathtext.

Sphinx's default, MathJax, is loaded from a CDN when the page opens, so without internet (a
classroom behind a firewall, a laptop on a train) every formula would show as raw TeX. This
extension draws each formula once, at build time, with matplotlib (already a dependency), into
``_images/math/<hash>.svg``. Nothing is fetched, neither when building nor when reading.

mathtext knows most of the TeX used for formulas (fractions, sums, Greek, ``\\left( \\right)``,
``\\mathrm``, ``\\mathbb``, ``\\text``...), but not environments such as ``aligned``. A few common
constructs are rewritten first (see :func:`simplify`); a line that still does not parse is shown as
its TeX source, and the build lists it (``-v``) without failing.
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from docutils import nodes
from matplotlib import mathtext
from matplotlib.font_manager import FontProperties
from sphinx.util import logging

logger = logging.getLogger(__name__)

INLINE_SIZE = 13.0  # points (1pt = 4/3 px; the theme's body text is 16px = 12pt, math reads
DISPLAY_SIZE = 14.5  # better a little larger)

_DROP = re.compile(
    r"\\(?:big|Big|bigg|Bigg)[lrm]?(?![a-zA-Z])|\\(?:displaystyle|textstyle|limits|nolimits|notag|"
    r"nonumber)(?![a-zA-Z])|\\(?:tag|label)\{[^}]*\}|\\(?:begin|end)\{(?:aligned|align\*?|equation\*?|"
    r"split|gathered|gather\*?|multline\*?)\}")
_RENAME = {r"\tfrac": r"\frac", r"\dfrac": r"\frac", r"\lVert": r"\Vert", r"\rVert": r"\Vert",
           r"\textbf": r"\mathbf", r"\middle": "", r"\operatorname*": r"\operatorname"}


def simplify(tex: str) -> list[str]:
    """Rewrite ``tex`` into lines that mathtext can draw: environments and sizing commands are
    dropped, ``\\\\`` splits lines, ``&`` alignment marks go."""
    tex = _DROP.sub("", tex)
    for old, new in _RENAME.items():
        tex = tex.replace(old, new)
    lines = [line.replace("&", " ").strip() for line in re.split(r"\\\\|\n\s*\n", tex)]
    return [" ".join(line.split()) for line in lines if line.strip()]


def _draw(tex: str, size: float, folder: Path) -> tuple[str, float, float, float] | None:
    """Draw ``tex`` into ``folder`` (cached by content). Returns (file name, width, height,
    depth) in points, or None when mathtext cannot parse it."""
    source = f"${tex}$"
    prop = FontProperties(size=size, math_fontfamily="cm")  # Computer Modern: looks like TeX
    try:
        width, height, depth, *_ = mathtext.MathTextParser("path").parse(source, dpi=72, prop=prop)
    except ValueError:
        return None
    # "transparent" in the key: images drawn before the backgrounds were made transparent are redrawn
    name = hashlib.sha1(f"{size}|transparent|{source}".encode()).hexdigest()[:16] + ".svg"
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        # No background: a white box would show as a grey one once dark mode inverts the colours.
        with matplotlib.rc_context({"svg.hashsalt": "minirlhf", "svg.fonttype": "path",
                                    "savefig.transparent": True}):
            mathtext.math_to_image(source, path, prop=prop, dpi=72, format="svg")
    return name, float(width), float(height), float(depth)


def _image(translator, tex: str, size: float, css_class: str) -> str:
    """HTML for one line of math: an <img>, or the TeX source when it cannot be drawn."""
    folder = Path(translator.builder.outdir) / translator.builder.imagedir / "math"
    drawn = _draw(tex, size, folder)
    if drawn is None:
        logger.info(f"mathtext cannot draw {tex!r}; shown as TeX source",
                    location=translator.builder.current_docname)
        return f'<code class="math-source">{html.escape(tex)}</code>'
    name, width, height, depth = drawn
    src = f"{translator.builder.imgpath}/math/{name}"
    return (f'<img class="{css_class}" src="{src}" alt="{html.escape(tex)}" '
            f'style="width:{width:.2f}pt; height:{height:.2f}pt; vertical-align:{-depth:.2f}pt"/>')


def visit_math(translator, node) -> None:
    """Inline math, ``$...$``."""
    lines = simplify(node.astext())
    translator.body.append(" ".join(_image(translator, line, INLINE_SIZE, "math") for line in lines))
    raise nodes.SkipNode


def visit_displaymath(translator, node) -> None:
    """Display math, ``$$...$$``: one centred image per line."""
    # not starttag(): it would add the class "math", which the theme lays out right-aligned
    anchor = f' id="{node["ids"][0]}"' if node.get("ids") else ""
    translator.body.append(f'<div class="mathtext-display"{anchor}>')
    if node.get("number"):
        from sphinx.util.math import get_node_equation_number

        number = get_node_equation_number(translator, node)
        translator.body.append(f'<span class="eqno">({number})</span>')
    for line in simplify(node.astext()):
        translator.body.append(f"<p>{_image(translator, line, DISPLAY_SIZE, 'math-display')}</p>")
    translator.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app):
    """Register the ``mathtext`` HTML math renderer."""
    app.add_html_math_renderer("mathtext", inline_renderers=(visit_math, None),
                               block_renderers=(visit_displaymath, None))
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
