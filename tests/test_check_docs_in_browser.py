"""scripts/check_docs_in_browser.py needs a Chromium, which CI lacks: these tests run only its rules
(what counts as a problem on a page) and its choice of pages, on hand-made measurements."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("check_docs_in_browser",
                                                  ROOT / "scripts" / "check_docs_in_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIGURE = {"src": "../_images/a.png", "alt": "Figure: France, beta = 0.1. Grouped bars of answers.",
          "formula": False, "scale": 1.0, "shown": 640, "linked": True}
FORMULA = {"src": "../_images/math/b.svg", "alt": "\\beta", "formula": True, "scale": 1.0, "shown": 12,
           "linked": False}


def _page(**changes):
    clean = {"search": ["button.search-button-field"], "text": "03 · PPO with a KL penalty",
             "outputText": "loss 4.27 -> 0.25\nValueError: the data lack a column", "errorOutputs": 0,
             "wide": [], "wrapped": [], "scrolling": 2, "rawTables": [], "pageScrolls": False,
             "pageWidth": 1280, "outside": [],
             "images": [{"src": "a.png", "complete": True, "naturalWidth": 640}],
             "figures": [FIGURE, FORMULA]}
    return {**clean, **changes}


def test_a_clean_page_has_no_problems():
    # a printed error message is not a traceback
    assert _script().problems(_page(), []) == []


def test_each_problem_is_named():
    problems = _script().problems
    found = problems(_page(search=[]), [])
    assert len(found) == 1 and "0 search controls" in found[0]
    assert "2 search controls" in problems(_page(search=["a", "b"]), [])[0]
    assert "widget repr" in problems(_page(text="x VBox(children=(Label(),)) y"), [])[0]
    assert "progress-bar" in problems(_page(outputText="Loading weights:   0%|          | 0/28"), [])[0]
    assert "traceback" in problems(_page(outputText="Traceback (most recent call last):\n  File"), [])[0]
    wide = {"where": "code cell", "scrollWidth": 926, "clientWidth": 684, "line": "print(...)"}
    assert "sticks out of its column" in problems(_page(wide=[wide]), [])[0]
    broken = [{"src": "b.png", "complete": True, "naturalWidth": 0}]
    assert "image not loaded: b.png" in problems(_page(images=broken), [])[0]
    assert "failed to load: /x.css (404)" in problems(_page(), ["/x.css (404)"])[0]


def test_the_pages_are_the_index_and_every_notebook(tmp_path):
    for name in ("index.html", "teachers.html", "search.html", "notebooks/01_a.html", "exercises/01_b.html",
                 "_modules/x.html"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("<html></html>")
    pages = _script().pages_to_check
    assert pages(tmp_path, every_page=False) == ["index.html", "notebooks/01_a.html", "exercises/01_b.html"]
    assert pages(tmp_path, every_page=True) == ["exercises/01_b.html", "index.html", "notebooks/01_a.html",
                                                 "teachers.html"]


def test_the_problems_a_reader_meets_on_a_phone_or_a_laptop_are_named():
    """Issue 36: each class of problem the browser check missed, as measured on the built site then."""
    problems = _script().problems
    # notebook 05's results table, rendered as CommonMark: its pipe text (smart quotes made --- a dash)
    table = problems(_page(rawTables=["| method | attainment (train) | KL |"]), [])
    assert len(table) == 1 and "Markdown table shown as text" in table[0]
    # custom.css's pre-wrap: a code line continued at column 0
    wrapped = {"where": "code cell", "whiteSpace": "pre-wrap", "width": 684, "needed": 926,
               "line": "fig = plot_history(history, panels, title=...,"}
    found = problems(_page(wrapped=[wrapped]), [])
    assert len(found) == 1 and "wraps its lines" in found[0] and "pre-wrap" in found[0]
    # where_next at 390 px: a heading's long code widened the page to 660 px
    culprit = {"element": "code.docutils.literal", "text": "trl.experimental.online_dpo.OnlineDPOConfig",
               "right": 660}
    found = problems(_page(pageScrolls=True, pageWidth=660, outside=[culprit]), [])
    assert len(found) == 1 and "scrolls sideways (660 px wide)" in found[0] and "OnlineDPOConfig" in found[0]
    # something sticks out of the window although the page does not scroll (clipped by the theme)
    assert "sticks out of the window" in problems(_page(outside=[culprit]), [])[0]
    # a notebook figure at half its size, and the index's pipeline figure at 41%, with no link
    small = {**FIGURE, "scale": 0.41, "shown": 340, "linked": False}
    found = problems(_page(figures=[small]), [])
    assert len(found) == 1 and "41% of its size" in found[0] and "no link" in found[0]
    assert problems(_page(figures=[{**small, "linked": True}]), []) == []  # a link opens it full size
    # a display equation shrunk to fit a phone's column
    found = problems(_page(figures=[{**FORMULA, "scale": 0.7}]), [])
    assert len(found) == 1 and "formula shrunk to 70%" in found[0]
    # MyST-NB's alt text: the image's file name
    nameless = {**FIGURE, "alt": "../_images/a.png"}
    found = problems(_page(figures=[nameless]), [])
    assert len(found) == 1 and "alt text" in found[0]
    assert "alt text" in problems(_page(figures=[{**FIGURE, "alt": ""}]), [])[0]
    # a code block that scrolls sideways in its own box is fine
    assert problems(_page(scrolling=5), []) == []


def test_the_build_it_runs_is_nitpicky():
    source = (ROOT / "scripts" / "check_docs_in_browser.py").read_text(encoding="utf-8")
    assert '"-n", "-W"' in source
