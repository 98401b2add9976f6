"""Pages the docs build writes before Sphinx reads anything, so the site follows the repository.

* the notebooks: ``notebooks/NN_*.ipynb`` are copied to ``docs/notebooks/`` and the exercise
  notebooks ``notebooks/exercises/NN_*.ipynb`` to ``docs/exercises/`` (a glob: a new notebook
  appears on the site without touching the docs), without their widget outputs;
* the API reference: one page per public module of minirlhf, in ``docs/api/``, and the index of
  them with each module's summary, ``docs/_generated/api_index.md``;
* the table that maps every field of every minirlhf ``*Config`` to TRL, in
  ``docs/_generated/config_tables.md``, and the main ones to TRL, OpenRLHF and verl, in
  ``docs/_generated/engines_table.md`` (an HTML table; both from :mod:`trl_mapping`).

Generated files are git-ignored (``docs/.gitignore``). Each is rewritten only when its content
changes, so that Sphinx's incremental builds stay incremental.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import json
import pkgutil
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent
REPO = DOCS.parent


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def static_copy(notebook: dict) -> dict:
    """The notebook without its widget outputs (progress bars, sliders): a static page cannot run
    them, and their stored text is only the widget's initial state (a progress bar at 0%)."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


def _mirror(sources: list[Path], folder: Path) -> list[str]:
    """Copy the notebooks ``sources`` into ``folder`` as :func:`static_copy` (writing only those
    that changed) and delete stale copies."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in sources}
    for old in folder.glob("*.ipynb"):
        if old.name not in names:
            old.unlink()
    for source in sources:
        text = json.dumps(static_copy(json.loads(source.read_text(encoding="utf-8"))), indent=1,
                          ensure_ascii=False) + "\n"
        _write_if_changed(folder / source.name, text)
    return sorted(names)


def sync_notebooks() -> dict[str, list[str]]:
    """Copy the tutorial and exercise notebooks into the docs source tree."""
    notebooks = REPO / "notebooks"
    return {
        "notebooks": _mirror(sorted(notebooks.glob("[0-9]*.ipynb")), DOCS / "notebooks"),
        "exercises": _mirror(sorted((notebooks / "exercises").glob("[0-9]*.ipynb")), DOCS / "exercises"),
    }


def public_modules() -> list[str]:
    """Every module of minirlhf whose dotted name has no part starting with ``_``."""
    import minirlhf

    names = ["minirlhf"] if (minirlhf.__doc__ or "").strip() else []
    for info in pkgutil.walk_packages(minirlhf.__path__, "minirlhf."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


# autodoc writes reStructuredText, so the directive goes through eval-rst (MyST would read the
# generated text as Markdown otherwise).
API_PAGE = """# `{module}`

```{{eval-rst}}
.. automodule:: {module}
   :members:
   :show-inheritance:
   :member-order: bysource
   :ignore-module-all:
```
"""


def write_api_pages() -> list[str]:
    """One page per public module in ``docs/api/``; stale pages are removed."""
    folder = DOCS / "api"
    folder.mkdir(exist_ok=True)
    modules = public_modules()
    for old in folder.glob("*.md"):
        if old.stem not in modules:
            old.unlink()
    for module in modules:
        _write_if_changed(folder / f"{module}.md", API_PAGE.format(module=module))
    return modules


def module_summary(module: str) -> str:
    """The first paragraph of a module's docstring, in MyST Markdown on one line."""
    text = (importlib.import_module(module).__doc__ or "").strip().split("\n\n")[0]
    text = " ".join(text.split()).rstrip(":").rstrip()
    text = re.sub(r":([a-z]+):`([^`]+)`", r"{\1}`\2`", text).replace("``", "`")
    return text if text.endswith((".", "?", "!", '"')) else text + "."


def api_index(modules: list[str]) -> str:
    """A Markdown table of every public module, linked, with its summary."""
    rows = ["| module | what it holds |", "|---|---|"]
    for module in modules:
        summary = module_summary(module).replace("|", "\\|")
        rows.append(f"| {{mod}}`{module}` | {summary} |")
    return "\n".join(rows) + "\n"


def write_api_index(modules: list[str]) -> None:
    """Write ``_generated/api_index.md`` (included by ``api.md``)."""
    _write_if_changed(DOCS / "_generated" / "api_index.md", api_index(modules))


SHARED_CONFIGS = {"minirlhf.rl.RLConfig"}
"""Base classes of other configs, not given to any trainer: their fields are mapped under PPOConfig's
and GRPOConfig's."""


def config_classes() -> list[type]:
    """Every ``@dataclass`` named ``*Config`` defined in a public module of minirlhf (but the shared
    base classes)."""
    found = []
    for name in public_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__name__.endswith("Config")
                    and obj.__module__ == name and f"{name}.{obj.__qualname__}" not in SHARED_CONFIGS):
                found.append(obj)
    return found


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return f"`{field.default!r}`"
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f"`{field.default_factory()!r}`"  # type: ignore[misc]
    return "(required)"


def config_tables(mapping: dict) -> tuple[str, list[str]]:
    """Markdown tables (one per config) and the list of fields that have no entry in ``mapping``."""
    parts, missing = [], []
    order = list(mapping)  # the pipeline's order (SFT, reward model, PPO, DPO), then the rest
    classes = sorted(config_classes(), key=lambda c: (order.index(f"{c.__module__}.{c.__qualname__}")
                                                      if f"{c.__module__}.{c.__qualname__}" in order
                                                      else len(order)))
    for cls in classes:
        key = f"{cls.__module__}.{cls.__qualname__}"
        entry = mapping.get(key)
        if entry is None:
            missing.append(key)
            continue
        trl_class, fields = entry["trl"], entry["fields"]
        parts.append(f"### `{key}` and TRL's `{trl_class}`\n")
        if entry.get("intro"):
            parts.append(entry["intro"] + "\n")
        parts.append("| minirlhf field = default | TRL counterpart | notes |\n|---|---|---|")
        for field in dataclasses.fields(cls):
            if field.name not in fields:
                missing.append(f"{key}.{field.name}")
                continue
            trl_name, note = fields[field.name]
            trl_name = f"`{trl_name}`" if trl_name else "none"
            parts.append(f"| `{field.name}` = {_default(field)} | {trl_name} | {note} |")
        parts.append("")
    return "\n".join(parts), missing


def write_config_tables(mapping: dict) -> list[str]:
    """Write ``_generated/config_tables.md``; returns the unmapped configs and fields."""
    text, missing = config_tables(mapping)
    _write_if_changed(DOCS / "_generated" / "config_tables.md", text + "\n")
    return missing


def _breakable_code(name: str) -> str:
    """``name`` as inline code (HTML) that may break after a dot, a comma or an ``=``, and after an
    underscore of a part longer than 16 characters, and nowhere else: a long dotted key wraps at its
    parts instead of widening the table."""
    text = html.escape(name)
    text = re.sub(r"\w{17,}", lambda m: m.group(0).replace("_", "_<wbr>"), text)
    text = re.sub(r"(?<=[^-])([.,=])(?=\w)", r"\1<wbr>", text)
    return f'<code class="docutils literal notranslate">{text}</code>'


def engines_table(mapping: dict, engines: dict) -> tuple[str, list[str]]:
    """One table (HTML, so that long names break only at their dots and underscores) of the main
    fields: minirlhf, TRL (from ``mapping``), OpenRLHF and verl (from ``engines``); and the entries
    of ``engines`` that name no field of a minirlhf config."""
    fields = {f"{c.__module__}.{c.__qualname__}": {f.name for f in dataclasses.fields(c)}
              for c in config_classes()}
    head = "".join(f"<th>{name}</th>" for name in ("minirlhf", "TRL", "OpenRLHF", "verl"))
    rows, unknown = [], []
    for key, entries in engines.items():
        short = key.split(".", 1)[1]  # "ppo.PPOConfig": a row of its own, then one row per field
        rows.append(f'<tr class="engines-config"><th colspan="4">{_breakable_code(short)}</th></tr>')
        for field, names in entries.items():
            if field not in fields.get(key, ()):
                unknown.append(f"{key}.{field}")
                continue
            trl_name = mapping[key]["fields"][field][0]
            names = (field, trl_name, *names)
            cells = [_breakable_code(name) if name else "none" for name in names]
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    table = ('<div class="pst-scrollable-table-container">\n<table class="table engines-table">\n'
             f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n</div>")
    return table, unknown


def write_engines_table(mapping: dict, engines: dict) -> list[str]:
    """Write ``_generated/engines_table.md``; returns the entries that name no config field."""
    text, unknown = engines_table(mapping, engines)
    _write_if_changed(DOCS / "_generated" / "engines_table.md", text + "\n")
    return unknown
