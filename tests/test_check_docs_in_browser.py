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


def _page(**changes):
    clean = {"search": ["button.search-button-field"], "text": "03 · PPO with a KL penalty",
             "outputText": "loss 4.27 -> 0.25\nValueError: the data lack a column", "errorOutputs": 0,
             "wide": [], "pageScrolls": False, "pageWidth": 1280,
             "images": [{"src": "a.png", "complete": True, "naturalWidth": 640}]}
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
    assert "wider than its column" in problems(_page(wide=[wide]), [])[0]
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
