"""Numbers from the runs that made them: the one way a page or the README shows a measured number.

Two sources, one syntax (MyST roles), read by the docs build and by ``scripts/make_readme.py``:

* a number that a **notebook** prints is glued there (``myst_nb.glue("key", value, display=False)``)
  and pasted with MyST-NB's own role, ``{glue:text}`../notebooks/01_sft_tiny_gpt.ipynb::key:.3f```;
  :func:`glued` reads the same stored output for the README;
* a number from a **benchmark** is read from its results file, ``benchmarks/results/NAME.json``, by
  the role defined here::

      {result}`dpo.json > summary > [method=offline, beta=0.1] > train_attainment_median ; .3f`

  The path is a list of steps separated by ``>``: a key of a dict (``summary``), an index of a list
  (``0``), or a filter ``[field=value, ...]`` that keeps the items of a list whose fields match (one
  item left: that item; several: the list). A key applied to a list takes it from every item. After
  ``;`` come reducers (``median``, ``min``, ``max``, ``sum``, ``count``) and then a format: a Python
  format spec (``.3f``, ``.1%``, ``,d``) or ``range`` (``0.916-0.921``, with the spec after it).

A third role, ``{given}`text```, shows its text unchanged: it marks a number that no run measures (a
paper's number with its citation, a target set by an issue) so that the drift test
(``tests/test_single_source.py``) knows it was meant.
"""

from __future__ import annotations

import json
import re
import statistics
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
RESULTS = REPO / "benchmarks" / "results"

ROLE = re.compile(r"\{(result|given|glue:text)\}`([^`]+)`")


class ResultError(ValueError):
    """A ``{result}`` that names no file, no key or no single value: the page is out of date."""


@lru_cache(maxsize=None)
def _load(name: str):
    path = RESULTS / name
    if path.parent != RESULTS or not path.is_file():
        raise ResultError(f"no results file benchmarks/results/{name}")
    return json.loads(path.read_text(encoding="utf-8"))


def _matches(item, conditions: dict[str, str]) -> bool:
    if not isinstance(item, dict):
        return False
    for field, wanted in conditions.items():
        value = item.get(field)
        if value is None or str(value) != wanted and not _same_number(value, wanted):
            return False
    return True


def _same_number(value, text: str) -> bool:
    try:
        return float(value) == float(text)
    except (TypeError, ValueError):
        return False


def _step(value, step: str, spec: str):
    if step.startswith("[") and step.endswith("]"):
        conditions = dict(part.split("=", 1) for part in step[1:-1].split(","))
        conditions = {k.strip(): v.strip() for k, v in conditions.items()}
        if not isinstance(value, list):
            raise ResultError(f"{spec}: the filter {step} needs a list")
        kept = [item for item in value if _matches(item, conditions)]
        if not kept:
            raise ResultError(f"{spec}: nothing matches {step}")
        return kept[0] if len(kept) == 1 else kept
    if isinstance(value, dict):
        if step not in value:
            raise ResultError(f"{spec}: no key {step!r} (keys: {', '.join(map(str, list(value)[:20]))})")
        return value[step]
    if isinstance(value, list):
        if step.lstrip("-").isdigit():
            return value[int(step)]
        return [_step(item, step, spec) for item in value]
    raise ResultError(f"{spec}: cannot take {step!r} of {value!r}")


REDUCERS = {"median": statistics.median, "min": min, "max": max, "sum": sum, "count": len}


def _format(value, fmt: str, spec: str) -> str:
    if isinstance(value, (list, dict)):
        raise ResultError(f"{spec}: gives {len(value)} values, not one (add a filter or a reducer)")
    if fmt.endswith("d") and isinstance(value, float):
        if value != round(value):
            raise ResultError(f"{spec}: {value} is not a whole number")
        value = int(value)
    try:
        return format(value, fmt)
    except (TypeError, ValueError) as error:
        raise ResultError(f"{spec}: cannot format {value!r} with {fmt!r}: {error}") from None


def result(spec: str) -> str:
    """The text of one ``{result}`` role: ``FILE > STEP > ... ; REDUCER ... ; FORMAT``."""
    path, *after = [part.strip() for part in spec.split(";")]
    name, *steps = [part.strip() for part in path.split(">")]
    value = _load(name)
    for step in steps:
        value = _step(value, step, spec)
    fmt = after.pop() if after and after[-1] not in REDUCERS else ""
    for reducer in after:
        if reducer not in REDUCERS:
            raise ResultError(f"{spec}: unknown reducer {reducer!r} (one of {', '.join(REDUCERS)})")
        value = REDUCERS[reducer](value if isinstance(value, list) else [value])
    if fmt.startswith("range"):
        if not isinstance(value, list) or not value:
            raise ResultError(f"{spec}: range needs several values")
        inner = fmt[len("range"):].strip() or "s"
        low, high = _format(min(value), inner, spec), _format(max(value), inner, spec)
        return low if low == high else f"{low}-{high}"
    return _format(value, fmt, spec)


def glued(notebook: Path, key: str, fmt: str = "") -> str:
    """What ``{glue:text}`NOTEBOOK::KEY:FMT``` pastes: the text of ``glue(KEY, ...)`` stored in the
    notebook's outputs, formatted as MyST-NB formats it."""
    from myst_nb.core.variables import format_plain_text

    for cell in json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                prefix = output["metadata"]["scrapbook"].get("mime_prefix", "")
                return format_plain_text(output["data"][prefix + "text/plain"], fmt or "s")
    raise ResultError(f"{notebook}: nothing glued as {key!r} (run the notebook again?)")


def render(text: str, base: Path) -> str:
    """``text`` with every role replaced by its value (``{glue:text}`` paths relative to ``base``):
    Markdown that needs no Sphinx, for the README."""

    def value(match: re.Match) -> str:
        role, body = match.groups()
        if role == "given":
            return body
        if role == "result":
            return result(body)
        doc, rest = body.split("::", 1)
        key, _, fmt = rest.partition(":")
        return glued(base / doc, key, fmt)

    return ROLE.sub(value, text)


def setup(app):
    """The ``{result}`` and ``{given}`` roles for the docs build."""
    from docutils import nodes
    from docutils.utils import unescape

    def result_role(name, rawtext, text, lineno, inliner, options=None, content=None):
        try:
            value = result(unescape(text))
        except ResultError as error:
            message = inliner.reporter.error(str(error), line=lineno)
            return [inliner.problematic(rawtext, rawtext, message)], [message]
        return [nodes.inline(value, value, classes=["from-a-run"])], []

    def given_role(name, rawtext, text, lineno, inliner, options=None, content=None):
        return [nodes.inline(unescape(text), unescape(text))], []

    app.add_role("result", result_role)
    app.add_role("given", given_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
