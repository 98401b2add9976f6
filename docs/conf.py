"""Sphinx configuration of the minirlhf site.

Build it (offline, warnings as errors, every cross-reference resolved) from the repository root with::

    sphinx-build -n -W -b html docs docs/_build/html

then open ``docs/_build/html/index.html``. Nothing is downloaded, neither while building nor
while reading: notebooks are rendered from their stored outputs (no execution), formulas are drawn
by matplotlib at build time (``_ext/mathtext_math.py``) instead of MathJax from a CDN, and no
extension fetches inventories from the web.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # import minirlhf from this checkout even if not installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pipeline_figure  # noqa: E402
import site_sources  # noqa: E402
from sphinx.util import logging  # noqa: E402
from trl_mapping import ENGINES, MAPPING  # noqa: E402

project = "minirlhf"
author = "the minirlhf authors"
copyright = "the minirlhf authors, MIT licence"
release = version = "0.1.0"

extensions = [
    "myst_nb",  # Markdown pages and notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "mathtext_math",  # offline math (see the module)
    "run_results",  # {result}`FILE > PATH ; FORMAT`: a number read from benchmarks/results (see the module)
    "reader_view",  # notebook figures: alt text and a link to the full size; reading order; search
]

# --- cross-references ---------------------------------------------------------------------------
# Every cross-reference must resolve (the build runs with -n -W): a reference to a moved or misspelt
# target fails the build instead of showing as plain code. Only the libraries the API's signatures
# name are let through (their docs are not linked: intersphinx would download their inventories).
nitpicky = True
nitpick_ignore_regex = [
    ("py:class", r"(torch|datasets|transformers|ipywidgets)\..+"),
    ("py:class", r"pathlib\.Path|collections\.abc\.Callable|argparse\.ArgumentParser"),
]

# --- sources ------------------------------------------------------------------------------------
root_doc = "index"
exclude_patterns = ["_build", "_generated", "_ext", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
NOTEBOOKS = site_sources.sync_notebooks()  # notebooks/ -> docs/notebooks/, docs/exercises/
API_MODULES = site_sources.write_api_pages()
site_sources.write_api_index(API_MODULES)
_UNMAPPED = site_sources.write_config_tables(MAPPING)
_UNKNOWN_ENGINE_FIELDS = site_sources.write_engines_table(MAPPING, ENGINES)

_FIGURE = DOCS / "_generated" / "pipeline.svg"
_FIGURE.parent.mkdir(exist_ok=True)
import matplotlib  # noqa: E402

with matplotlib.rc_context({"svg.hashsalt": "minirlhf", "svg.fonttype": "path"}):
    pipeline_figure.draw_pipeline().savefig(_FIGURE, metadata={"Date": None})

# --- MyST and notebooks ---------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # render the outputs stored in the notebooks; never run them here
nb_merge_streams = True
# A cell's Markdown output (notebook 05's results table) is rendered as GitHub Markdown, which has
# tables; the default, CommonMark, shows a table as its pipe text.
nb_render_markdown_format = "gfm"
# Widgets cannot run in a static page: site_sources drops their outputs from the copies it renders,
# and no widget JavaScript is loaded (it lives on a CDN; the site works offline).
nb_ipywidgets_js = {}
# A notebook may jump from a # title to a ### section; that is not worth failing the build over.
suppress_warnings = ["myst.header"]

# Docstrings' literal blocks hold formulas and shapes, not Python: no colouring unless a block names
# its language (every code block and notebook cell here does).
highlight_language = "text"

# --- API reference ------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_mock_imports: list[str] = []

# --- HTML ---------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "minirlhf"
html_math_renderer = "mathtext"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_js_files = [("search_snippets.js", {"defer": "defer"})]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": True,
    "use_fullscreen_button": False,
    # One search box: sphinx-book-theme has its own in the left sidebar (and a search button in the
    # article header on narrow screens); pydata-sphinx-theme >= 0.16 adds a second one in a header
    # bar above the page unless navbar_persistent is set. Empty, that header bar disappears.
    "navbar_persistent": [],
}
html_context = {"default_mode": "light"}
html_last_updated_fmt = None


def _report_unmapped(app):
    """Fail the build (it runs with -W) when a config field has no TRL counterpart listed."""
    for name in _UNMAPPED:
        logging.getLogger("minirlhf.docs").warning(
            f"{name} is not in docs/_ext/trl_mapping.py: add its TRL counterpart (or None with a "
            "note) so that the 'Where to go next' page covers every config field.")
    for name in _UNKNOWN_ENGINE_FIELDS:
        logging.getLogger("minirlhf.docs").warning(
            f"docs/_ext/trl_mapping.py's ENGINES names {name}, which is not a field of a minirlhf config.")


def setup(app):
    """Hook the checks above into the build."""
    app.connect("builder-inited", _report_unmapped)
