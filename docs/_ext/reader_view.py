"""What a reader of the site gets beyond the pages' text.

* **Notebook figures say what they show, and open at full size.** A notebook's figure is stored as
  a PNG with no description, so MyST-NB's ``<img>`` would carry its file name as alt text. Each one
  gets alt text from the cell that drew it (:func:`figure_alt`): its title and what the plotting
  function of :mod:`minirlhf.plots` draws. Every image of the site that is not a link already
  becomes a link to its file, so that a figure shrunk to a phone's width can be opened full size.
* **The reading order skips the teachers' answers.** :data:`OUT_OF_ORDER` pages stay in the
  navigation (the teachers' page links them) but are never a "Previous" or "Next" page: a student
  reading on from the teachers' page should not land on the answers.
* **Search snippets start in the article** (``_static/search_snippets.js``), not in the theme's
  buttons above it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import posixpath
import re

from docutils import nodes
from sphinx.util.osutil import relative_uri

OUT_OF_ORDER = {"discussion_answers"}
"""Pages left out of the Previous / Next links."""

FIGURE_MAKERS = {"minirlhf.plots": None, "minirlhf.widgets": {"beta_explorer": "BetaExplorer.figure"}}
"""Modules whose ``plot_*`` functions draw the notebooks' figures; for a widget, the method that
draws its static picture (its docstring describes the figure)."""

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _first_sentence(doc: str | None) -> str:
    """The docstring's first sentence, without reStructuredText markup."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = _ROLE.sub(lambda m: m.group(1).split(".")[-1], text).replace("``", "")
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return (match.group(1) if match else text).strip()


def _describers() -> dict[str, str]:
    """{function name: what its figure shows} for every figure-drawing function."""
    found = {}
    for module_name, special in FIGURE_MAKERS.items():
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != module_name:
                continue
            if special is None and not name.startswith("plot_"):
                continue
            if special is not None:
                if name not in special:
                    continue
                cls, method = special[name].split(".")
                obj = getattr(getattr(module, cls), method)
            found[name] = _first_sentence(obj.__doc__)
    return found


def _string_value(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with each ``{expression}`` written as its source."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append(ast.unparse(value.value))
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):  # "a " "b" split over lines
        left, right = _string_value(node.left), _string_value(node.right)
        return left + right if left is not None and right is not None else None
    return None


def figure_alt(source: str, describe: dict[str, str]) -> str | None:
    """Alt text for the figure a notebook cell draws: its title(s) and what the plotting function
    draws, read from the cell's code. None when the code says nothing of the kind."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    figure_titles, titles, kinds = [], [], []  # a figure's title first, then its panels'
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in describe and describe[name] and describe[name] not in kinds:
            kinds.append(describe[name])
        if name == "suptitle" and node.args:
            figure_titles.append(_string_value(node.args[0]))
        if name == "set_title" and node.args:
            titles.append(_string_value(node.args[0]))
        figure_titles += [_string_value(k.value) for k in node.keywords if k.arg == "title"]
    titles = [t.strip() for t in figure_titles + titles if t and t.strip()]
    parts = list(dict.fromkeys(titles)) + kinds
    if not parts:
        comment = next((line.strip("# ").strip() for line in source.splitlines()
                        if line.strip().startswith("#") and len(line.strip()) > 10), None)
        parts = [comment] if comment else []
    if not parts:
        return None
    text = ". ".join(p.rstrip(".") for p in parts) + "."
    return "Figure: " + text


def _cell_source(node: nodes.Node) -> str | None:
    """The code of the notebook cell that holds ``node`` (an output), or None."""
    cell = node.parent
    while cell is not None and not (isinstance(cell, nodes.container) and "cell" in cell.get("classes", [])):
        cell = cell.parent
    if cell is None:
        return None
    for block in cell.findall(nodes.literal_block):
        parent = block.parent
        if isinstance(parent, nodes.container) and "cell_input" in parent.get("classes", []):
            return block.astext()
    return None


def _is_file_name(alt: str | None, uri: str) -> bool:
    return not alt or alt == uri or posixpath.basename(alt) == posixpath.basename(uri)


def describe_notebook_figures(app, doctree) -> None:
    """Give every notebook figure whose alt text is missing or its file name a description."""
    describe = None
    for image in doctree.findall(nodes.image):
        if not _is_file_name(image.get("alt"), image.get("uri", "")):
            continue
        source = _cell_source(image)
        if source is None:
            continue
        describe = describe if describe is not None else _describers()
        image["alt"] = figure_alt(source, describe) or "Figure: drawn by the code cell above."


def link_images_to_full_size(app, doctree, docname) -> None:
    """Wrap every image that is not a link yet in a link to its file (full size)."""
    builder = app.builder
    if builder.format != "html":
        return
    images_dir = relative_uri(builder.get_target_uri(docname), builder.imagedir)
    for image in list(doctree.findall(nodes.image)):
        if isinstance(image.parent, nodes.reference) or "no-scaled-link" in image.get("classes", []):
            continue
        candidate = image.get("candidates", {}).get("*", image.get("uri", ""))
        if "://" in candidate or candidate.startswith("data:") or candidate not in app.env.images:
            continue
        target = posixpath.join(images_dir, app.env.images[candidate][1])
        link = nodes.reference("", "", refuri=target, internal=True, classes=["image-reference"],
                               reftitle="open the figure at full size")
        image.replace_self(link)
        link.append(image)


def skip_out_of_order_pages(app, pagename, templatename, context, doctree) -> None:
    """No "Previous" or "Next" link leads to a page of :data:`OUT_OF_ORDER`."""
    env = app.builder.env
    relations = env.collect_relations()
    for key, step in (("next", 2), ("prev", 1)):
        link = context.get(key)
        if not link:
            continue
        target = pagename
        seen = set()
        while True:
            following = relations.get(target, [None, None, None])[step]
            if following not in OUT_OF_ORDER or following in seen:
                break
            seen.add(following)
            target = following
        if target == pagename:
            continue  # the neighbour is in the reading order
        if following is None:
            context[key] = None
        else:
            context[key] = {"link": app.builder.get_relative_uri(pagename, following),
                            "title": app.builder.render_partial(env.titles[following])["title"]}


def setup(app):
    """Connect the three steps."""
    app.connect("doctree-read", describe_notebook_figures)
    app.connect("doctree-resolved", link_images_to_full_size)
    app.connect("html-page-context", skip_out_of_order_pages)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
