"""Open the built documentation in a real (headless) browser and check what a reader sees.

The docs tests (``tests/test_docs.py``) read the HTML files; this script looks at the pages the way
a browser draws them, with the theme's CSS and JavaScript applied. For the index and every notebook
page (the tutorial and the exercises) it checks that

* the page header shows exactly one search control (a visible search box or search button);
* no visible text reads ``VBox(children`` or ``HBox(children`` (a widget's text repr);
* no output shows a stale progress bar (``0%|``, ``45%|`` ...);
* no output shows a Python traceback;
* no Markdown table is shown as its pipe text (``| a | b |`` / ``|---|---|``) outside code;
* no line of code wraps inside a code block (continuation lines would start at column 0, breaking
  Python's indentation and fixed-width tables): a block wider than its column scrolls sideways in
  its own box, and no code block sticks out of the article column;
* nothing widens the page beyond the window (at 390 px, a phone: long code in a heading, a table
  or a signature that does not scroll in its own box), and nothing sticks out of the window;
* every figure is shown at a readable size (at least ``MIN_SCALE`` of its own width) or is a link
  to its full-size file; a formula is never shrunk; a figure's alt text is not its file name;
* every image has loaded (``naturalWidth > 0``), and no local file failed to load.

It prints one line per page and a summary, exits 1 if anything failed, and can save a full-page
screenshot of each page.

Needs Playwright for Python and a Chromium (not part of the project's dependencies, and not run by
the test suite)::

    pip install playwright          # the Python package; its own browser download is not needed
    apt-get install chromium        # Debian/Ubuntu; or pass --chromium PATH to any Chromium/Chrome

Usage, from the repository root::

    python scripts/check_docs_in_browser.py                      # build the docs into a temp folder
    python scripts/check_docs_in_browser.py --html docs/_build/html --screenshots /tmp/shots
    python scripts/check_docs_in_browser.py --all --width 390    # every page, a phone's width

Run it at both widths before a release: ``--all`` (1280 px) and ``--all --width 390``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in the page. Returns what a reader sees, measured after layout; the rules are applied in
# Python (``problems``) so that they are easy to read and change.
MEASURE_JS = r"""
() => {
  const visible = (el) => {
    if (!el.isConnected) return false;
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") return false;
    if (Number(style.opacity) === 0) return false;
    const box = el.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) return false;
    // hidden by an ancestor (display: none gives no box; this catches visibility and opacity)
    for (let p = el.parentElement; p; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (s.visibility === "hidden" || Number(s.opacity) === 0) return false;
    }
    return true;
  };
  const describe = (el) => {
    const cls = (el.className && el.className.baseVal === undefined) ? el.className : "";
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
      (cls ? "." + cls.trim().split(/\s+/).slice(0, 3).join(".") : "");
  };

  // Search controls in the page's chrome (header bars and sidebars), not in the search overlay
  // that opens on a click, and not in the article text.
  const searchSelector = [
    "input[type=search]", "form.bd-search", ".search-button__button", ".search-button-field",
    "button[aria-label=Search]", "[role=search]",
  ].join(",");
  const chrome = [".bd-header", ".bd-header-article", ".bd-sidebar-primary", ".bd-sidebar-secondary",
                  "header", "nav"].join(",");
  const seen = new Set();
  const search = [];
  for (const el of document.querySelectorAll(searchSelector)) {
    if (!el.closest(chrome) || el.closest(".search-button__wrapper, .bd-search-container, dialog")) continue;
    if (!visible(el)) continue;
    // a form and the input inside it are one control
    const control = el.closest("form.bd-search") || el;
    if (seen.has(control)) continue;
    seen.add(control);
    search.push(describe(control));
  }

  const article = document.querySelector("article.bd-article") || document.querySelector("main")
    || document.body;
  const text = article.innerText;

  // Notebook outputs (myst-nb: div.cell_output; plain pages have none).
  const outputs = [...article.querySelectorAll("div.cell_output, div.output")]
    .filter((o) => !o.parentElement.closest("div.cell_output, div.output"));  // outermost only
  const outputText = outputs.map((o) => o.innerText).join("\n");
  const errorOutputs = article.querySelectorAll("div.output.traceback, div.output.error");

  // Code blocks. A block wider than its column may scroll sideways in its own box; it must not
  // spill out of the article column, and its lines must not wrap (measured by laying the block
  // out once more without wrapping: if it is wider then, a line was wrapped).
  const column = article.getBoundingClientRect();
  const wide = [], wrapped = [];
  let scrolling = 0;
  for (const pre of article.querySelectorAll("pre")) {
    if (!visible(pre)) continue;
    const where = pre.closest("div.cell_output, div.output") ? "output" :
                  pre.closest("div.cell_input, div.cell") ? "code cell" : "code block";
    const lines = pre.innerText.split("\n");
    const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 100);
    const style = getComputedStyle(pre);
    const box = pre.getBoundingClientRect();
    const spills = pre.scrollWidth > pre.clientWidth + 1 && style.overflowX === "visible";
    if (spills || box.right > column.right + 1) {
      wide.push({where, scrollWidth: pre.scrollWidth, clientWidth: pre.clientWidth, line: longest});
    }
    if (!["pre", "nowrap"].includes(style.whiteSpace)) {
      const before = pre.scrollWidth, inline = pre.style.whiteSpace;
      pre.style.whiteSpace = "pre";
      const unwrapped = pre.scrollWidth;
      pre.style.whiteSpace = inline;
      if (unwrapped > before + 1) {
        wrapped.push({where, whiteSpace: style.whiteSpace, width: pre.clientWidth,
                      needed: unwrapped, line: longest});
      }
    }
    if (pre.scrollWidth > pre.clientWidth + 1) scrolling += 1;
  }

  // Markdown tables shown as text: a separator row |---|---| outside code (with smart quotes
  // on, "---" is drawn as an em dash: |—|—|).
  const proseText = (el) => {
    let text = "";
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.parentElement.closest("pre, code, kbd, samp, script, style")) text += node.data;
    }
    return text;
  };
  const rawTables = [];
  for (const el of article.querySelectorAll("p, li, dd, td, th, div.cell_output div.output")) {
    if (el.closest("pre")) continue;
    const text = proseText(el);
    const cell = "[ \\t]*:?(?:-{3,}|[\u2013\u2014][-\u2013\u2014]*):?[ \\t]*";
    const match = text.match(new RegExp(`\\|?${cell}\\|${cell}\\|?`));
    if (match) {
      const start = Math.max(0, text.lastIndexOf("\n", match.index - 2) + 1);
      rawTables.push(text.slice(start, start + 100).replace(/\s+/g, " ").trim());
    }
  }

  // Wider than the window: the page scrolls sideways, or an element sticks out of the window
  // (outermost such element of the main column, not inside a box that scrolls or clips).
  const pageScrolls = document.documentElement.scrollWidth > window.innerWidth + 1;
  const main = document.querySelector(".bd-main") || article;
  const clippedByAncestor = (el) => {
    for (let p = el.parentElement; p && p !== main.parentElement; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== "visible") return true;
    }
    return false;
  };
  const outside = [];
  for (const el of main.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width < 1 || box.right <= window.innerWidth + 1) continue;
    if (el.parentElement && el.parentElement.getBoundingClientRect().right > window.innerWidth + 1
        && main.contains(el.parentElement) && !clippedByAncestor(el.parentElement)) continue;
    if (clippedByAncestor(el) || !visible(el)) continue;
    outside.push({element: describe(el), right: Math.round(box.right),
                  text: (el.innerText || el.getAttribute("alt") || "").replace(/\s+/g, " ").slice(0, 60)});
    if (outside.length >= 5) break;
  }

  const images = [...document.images].map((img) => ({
    src: img.getAttribute("src"), complete: img.complete, naturalWidth: img.naturalWidth,
  }));

  // Figures and formulas in the article, as drawn: the scale they are shown at, whether they link
  // to a file that opens full size, and their alt text.
  const figures = [];
  for (const img of article.querySelectorAll("img")) {
    if (!visible(img) || !img.naturalWidth) continue;
    const shown = img.getBoundingClientRect().width;
    const formula = img.matches("img.math, img.math-display");
    // a formula's drawn size is its width in pt (1 pt = 4/3 px); a picture's is its own width
    const drawn = formula && img.style.width.endsWith("pt") ? parseFloat(img.style.width) * 4 / 3
                                                              : img.naturalWidth;
    const link = img.closest("a[href]");
    figures.push({src: img.getAttribute("src"), alt: img.getAttribute("alt") || "", formula,
                  scale: drawn ? shown / drawn : 1, shown: Math.round(shown),
                  linked: Boolean(link && !link.getAttribute("href").startsWith("#"))});
  }
  return {title: document.title, search, text, outputText, errorOutputs: errorOutputs.length,
          wide, wrapped, scrolling, rawTables, pageScrolls,
          pageWidth: document.documentElement.scrollWidth, outside, images, figures,
          outputs: outputs.length};
}
"""

MIN_SCALE = 0.6
"""A figure shown at less than this share of its own width (its labels drawn at 9 pt on a 100-dpi
PNG would be under about 7 px tall) must be a link that opens it full size. A formula is never
shrunk (it is drawn at the text's size)."""
WIDGET_REPR = re.compile(r"[VH]Box\(children")
PROGRESS = re.compile(r"\d{1,3}%\|")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


def problems(measured: dict, failed_requests: list[str]) -> list[str]:
    """What is wrong on one page, in words (empty: nothing)."""
    found = []
    if len(measured["search"]) != 1:
        found.append(f"{len(measured['search'])} search controls in the header, want 1: "
                     + ", ".join(measured["search"]))
    for match in WIDGET_REPR.finditer(measured["text"]):
        context = measured["text"][max(0, match.start() - 30): match.end() + 30].replace("\n", " ")
        found.append(f"widget repr visible: ...{context}...")
        break
    progress_lines = [line.strip() for line in measured["outputText"].splitlines() if PROGRESS.search(line)]
    if progress_lines:
        found.append(f"{len(progress_lines)} progress-bar line(s) in outputs, "
                     f"e.g. {progress_lines[0][:80]!r}")
    if TRACEBACK.search(measured["outputText"]) or measured["errorOutputs"]:
        found.append("a Python traceback in an output")
    for block in measured["wide"]:
        found.append(f"{block['where']} sticks out of its column ({block['scrollWidth']} > "
                     f"{block['clientWidth']} px): {block['line']!r}")
    for block in measured.get("wrapped", []):
        found.append(f"{block['where']} wraps its lines (white-space: {block['whiteSpace']}; "
                     f"{block['needed']} px needed, {block['width']} px wide): {block['line']!r}")
    for table in measured.get("rawTables", []):
        found.append(f"a Markdown table shown as text: {table!r}")
    if measured["pageScrolls"]:
        culprit = measured.get("outside") or []
        where = f": {culprit[0]['element']} {culprit[0]['text']!r} ends at {culprit[0]['right']} px" \
            if culprit else ""
        found.append(f"the page scrolls sideways ({measured['pageWidth']} px wide){where}")
    elif measured.get("outside"):
        first = measured["outside"][0]
        found.append(f"{first['element']} {first['text']!r} sticks out of the window "
                     f"(ends at {first['right']} px)")
    for figure in measured.get("figures", []):
        name = figure["src"].rsplit("/", 1)[-1]
        if figure["formula"]:
            if figure["scale"] < 0.95:
                found.append(f"a formula shrunk to {figure['scale']:.0%}: {figure['alt'][:60]!r}")
            continue
        if figure["scale"] < MIN_SCALE and not figure["linked"]:
            found.append(f"figure shown at {figure['scale']:.0%} of its size ({figure['shown']} px), "
                         f"with no link to open it full size: {name}")
        alt = figure["alt"].strip()
        if not alt or alt.rsplit("/", 1)[-1] == name:
            found.append(f"figure without alt text (it reads as its file name): {name}")
    for image in measured["images"]:
        if not image["complete"] or image["naturalWidth"] == 0:
            found.append(f"image not loaded: {image['src']}")
    for request in failed_requests:
        found.append(f"failed to load: {request}")
    return found


def build_docs(out: Path) -> None:
    """Build the site as the README says (offline, warnings as errors, nitpicky references)."""
    print(f"building the docs into {out} ...", flush=True)
    subprocess.run([sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-q", "-b", "html", "docs",
                    str(out)], cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``folder`` on localhost (a free port) from a background thread."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # no access log on stderr
            pass

    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def pages_to_check(html: Path, every_page: bool) -> list[str]:
    """The index and every notebook page (tutorial and exercises), or every page with ``--all``."""
    if every_page:
        pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                       if not p.relative_to(html).parts[0].startswith(("_", ".")))
        return [p for p in pages if p not in ("genindex.html", "search.html", "py-modindex.html")]
    pages = ["index.html"]
    for folder in ("notebooks", "exercises"):
        pages += sorted(f"{folder}/{p.name}" for p in (html / folder).glob("*.html"))
    return pages


def find_chromium(given: str | None) -> str:
    for candidate in (given, os.environ.get("CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit("No Chromium found: install one (apt-get install chromium) or pass --chromium PATH.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", type=Path, help="a built site (default: build one into a temp folder)")
    parser.add_argument("--screenshots", type=Path, help="save a full-page PNG of each page here")
    parser.add_argument("--all", action="store_true", help="check every page, not only the notebooks")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    parser.add_argument("--height", type=int, default=900, help="window height in CSS pixels")
    parser.add_argument("--chromium", help="path of a Chromium or Chrome (default: chromium on PATH)")
    parser.add_argument("--page", action="append", help="check only this page (e.g. where_next.html); "
                        "may be given several times")
    args = parser.parse_args(argv)

    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("Playwright is missing: pip install playwright")
    chromium = find_chromium(args.chromium)

    with tempfile.TemporaryDirectory() as tmp:
        html = args.html
        if html is None:
            html = Path(tmp) / "html"
            build_docs(html)
        html = html.resolve()
        if not (html / "index.html").exists():
            sys.exit(f"{html} has no index.html: build the docs first, or leave out --html.")
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
        server, base = serve(html)
        pages = args.page or pages_to_check(html, args.all)
        failures = {}
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True)
                context = browser.new_context(viewport={"width": args.width, "height": args.height})
                for page_path in pages:
                    page = context.new_page()
                    failed: list[str] = []
                    page.on("requestfailed", lambda r, f=failed: f.append(r.url))
                    page.on("response", lambda r, f=failed: f.append(f"{r.url} ({r.status})")
                            if r.status >= 400 and r.url.startswith(base) else None)
                    page.goto(f"{base}/{page_path}", wait_until="load")
                    # Lazy images load only near the viewport: ask for all of them, then wait.
                    page.evaluate("() => document.querySelectorAll('img[loading=lazy]')"
                                  ".forEach((img) => { img.loading = 'eager'; })")
                    page.wait_for_function("() => [...document.images].every((img) => img.complete)",
                                           timeout=15_000)
                    try:  # a busy machine may never be idle for 500 ms: measure anyway
                        page.wait_for_load_state("networkidle", timeout=15_000)
                    except PlaywrightTimeout:
                        pass
                    measured = page.evaluate(MEASURE_JS)
                    found = problems(measured, [f.replace(base, "") for f in failed])
                    status = "ok  " if not found else "FAIL"
                    scrolling = (f", {measured['scrolling']} code blocks scroll sideways"
                                 if measured["scrolling"] else "")
                    print(f"{status} {page_path}  ({len(measured['images'])} images, "
                          f"{measured['outputs']} outputs{scrolling})")
                    for problem in found:
                        print(f"       - {problem}")
                    if found:
                        failures[page_path] = found
                    if args.screenshots:
                        name = page_path.replace("/", "__").removesuffix(".html") + ".png"
                        page.screenshot(path=str(args.screenshots / name), full_page=True)
                    page.close()
                browser.close()
        finally:
            server.shutdown()

    print(f"\n{len(pages)} pages checked at {args.width}x{args.height}: "
          f"{len(pages) - len(failures)} ok, {len(failures)} with problems.")
    if args.screenshots:
        print(f"screenshots in {args.screenshots}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
