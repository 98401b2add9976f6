"""The documentation: the site builds offline with warnings as errors and every cross-reference
resolved (so a broken page or link fails CI), renders every notebook with its stored figures and
tables, described and linked to their full size, loads nothing from the web, and every public
function and class of minirlhf has a docstring."""

import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _site_sources():
    """docs/_ext/site_sources.py, which lists the public modules for the API pages."""
    spec = importlib.util.spec_from_file_location("site_sources", DOCS / "_ext" / "site_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _own_doc(obj) -> str:
    """The docstring written for ``obj`` itself (not inherited, not made up by @dataclass)."""
    doc = (obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # @dataclass writes "Name(field: type = ...)" when there is no docstring
    return doc.strip()


def _public_objects():
    """(dotted name, object) of every public module, and of every public function, class and
    method defined in them."""
    for module_name in _site_sources().public_modules():
        module = importlib.import_module(module_name)
        yield module_name, module
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            yield f"{module_name}.{name}", obj
            if inspect.isclass(obj):  # its public methods (properties are attributes: not required)
                for member_name, member in vars(obj).items():
                    member = getattr(member, "__func__", member)  # classmethod, staticmethod
                    if not member_name.startswith("_") and inspect.isfunction(member):
                        yield f"{module_name}.{name}.{member_name}", member


def test_the_package_docstring_names_every_module():
    import pkgutil

    import minirlhf
    names = [info.name for info in pkgutil.iter_modules(minirlhf.__path__)]
    missing = [name for name in names if f":mod:`~minirlhf.{name}`" not in minirlhf.__doc__]
    assert "ppo" in names and "exercises" in names and not missing, missing


def test_every_public_function_and_class_has_a_docstring():
    objects = dict(_public_objects())
    assert "minirlhf.sft.sft_loss" in objects and "minirlhf.exercises.checking.run_check" in objects
    missing = [name for name, obj in objects.items()
               if not (_own_doc(obj) if not inspect.ismodule(obj) else (obj.__doc__ or "").strip())]
    assert not missing, "add a docstring to: " + ", ".join(missing)


def test_the_docstring_check_sees_a_missing_docstring():
    @dataclasses.dataclass
    class Undocumented:
        x: int = 0

    def no_doc():
        pass

    assert _own_doc(Undocumented) == "" and _own_doc(no_doc) == ""
    assert _own_doc(test_the_docstring_check_sees_a_missing_docstring) == ""
    assert _own_doc(_own_doc).startswith("The docstring")


def _stored_images(notebook: Path) -> int:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum("image/png" in output.get("data", {}) or "image/svg+xml" in output.get("data", {})
               for cell in cells if cell["cell_type"] == "code" for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once, as the README says, into a temporary folder."""
    for package in ("sphinx", "myst_nb", "sphinx_book_theme"):
        pytest.importorskip(package)
    out = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, f"the docs build failed:\n{result.stderr[-5000:]}"
    return out


def test_the_landing_page_shows_the_pipeline(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "_images/pipeline.svg" in index
    assert (site / "_images" / "pipeline.svg").stat().st_size > 10_000


def test_every_notebook_is_rendered_with_its_stored_figures(site):
    notebooks = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    exercises = sorted((ROOT / "notebooks" / "exercises").glob("[0-9]*.ipynb"))
    assert notebooks and exercises
    for notebook, folder in [(n, "notebooks") for n in notebooks] + [(e, "exercises") for e in exercises]:
        page = (site / folder / f"{notebook.stem}.html").read_text(encoding="utf-8")
        assert page.count("<img") >= _stored_images(notebook), f"figures missing on {notebook.name}"
        assert "Traceback" not in page or notebook.parent.name == "exercises"


def test_the_api_reference_documents_each_module(site):
    page = (site / "api" / "minirlhf.sft.html").read_text(encoding="utf-8")
    assert 'id="minirlhf.sft.sft_loss"' in page and "Mean negative log-likelihood" in page
    modules = _site_sources().public_modules()
    assert all((site / "api" / f"{m}.html").exists() for m in modules)
    # the index says in a line what each module holds
    index = (site / "api.html").read_text(encoding="utf-8")
    for module in modules:
        assert f'href="api/{module}.html#module-{module}"' in index, module
    assert "Supervised fine-tuning (SFT): teach a random tiny GPT" in index


def test_notebook_figures_are_described_and_open_full_size(site):
    """MyST-NB's alt text of a notebook figure is its file name; reader_view.py describes it from
    the cell's code and links it to its file (a phone shows it at half its size or less)."""
    figure = re.compile(r'<a class="[^"]*image-reference[^"]*" href="\.\./_images/([0-9a-f]+\.png)"[^>]*>'
                        r'<img alt="([^"]*)" src="\.\./_images/\1"')
    for page in sorted((site / "notebooks").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        raster = re.findall(r'<img [^>]*src="\.\./_images/[0-9a-f]+\.png"', text)
        linked = figure.findall(text)
        assert len(linked) == len(raster), f"{page.name}: a figure without a link to its file"
        assert all(alt.startswith("Figure: ") and ".png" not in alt for _, alt in linked), page.name
    text = (site / "notebooks" / "02_reward_model.html").read_text(encoding="utf-8")
    assert re.search(r'alt="Figure: France: learned vs true reward\. Scatter of learned against true '
                     r'reward', text)


def test_a_notebooks_markdown_table_is_a_table(site):
    """Notebook 05 prints its results table as Markdown: rendered as GitHub Markdown, not as pipes."""
    page = (site / "notebooks" / "05_ppo_vs_dpo.html").read_text(encoding="utf-8")
    assert re.search(r'<div class="cell_output[^"]*">\s*<div class="pst-scrollable-table-container">'
                     r'<table[^>]*>\s*<thead>\s*<tr[^>]*><th[^>]*><p>method</p>', page)
    assert not re.search(r"<p>\|[^<]*\|\s*\n\|[-\u2013\u2014|]+\|", page)  # no pipe text


def test_reading_on_from_the_teachers_page_skips_the_answers(site):
    page = (site / "teachers.html").read_text(encoding="utf-8")
    assert 'href="discussion_answers.html"' in page  # linked from the text
    assert not re.search(r'<link rel="next"[^>]*discussion_answers', page)
    assert not re.search(r'class="right-next"[^>]*href="discussion_answers', page)
    results = (site / "results.html").read_text(encoding="utf-8")
    assert not re.search(r'<link rel="prev"[^>]*discussion_answers', results)


def test_figure_alt_text_is_read_from_the_cell():
    spec = importlib.util.spec_from_file_location("reader_view", DOCS / "_ext" / "reader_view.py")
    reader_view = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader_view)
    describe = reader_view._describers()
    alt = reader_view.figure_alt('fig = plots.plot_learned_vs_true_reward(france, title="France: learned")',
                                 describe)
    assert alt == ("Figure: France: learned. Scatter of learned against true reward over one prompt's "
                   "candidate answers.")
    inline = ('fig, ax = plt.subplots()\nax.set_title(f"Mass on bad answers (beta = {BETA})")\n'
              'fig.suptitle("All")')
    assert reader_view.figure_alt(inline, describe) == "Figure: All. Mass on bad answers (beta = BETA)."
    assert reader_view.figure_alt("# Why the hollow points are guesses: how likely\nx = 1", describe) \
        == "Figure: Why the hollow points are guesses: how likely."
    assert reader_view.figure_alt("x = 1", describe) is None


def test_every_config_field_is_mapped_to_trl(site):
    page = (site / "where_next.html").read_text(encoding="utf-8")
    for cls in _site_sources().config_classes():
        for field in dataclasses.fields(cls):
            assert f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{field.name}</span>" \
                in page, f"{cls.__name__}.{field.name} is not on the 'Where to go next' page"
        # each config is a section of its own (in the page's contents), not a rubric
        name = f"{cls.__module__}.{cls.__qualname__}"
        assert re.search(rf'<h3><code[^>]*><span class="pre">{re.escape(name)}</span>', page), name
    # the engines table: every column is code that breaks only where site_sources marks it
    assert '<table class="table engines-table">' in page and "algorithm.<wbr>kl_ctrl.<wbr>kl_coef" in page


def test_the_site_loads_nothing_from_the_web(site):
    """Scripts and stylesheets are local, and formulas are images drawn at build time."""
    remote = re.compile(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//')
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not remote.search(text), f"{page.relative_to(site)} loads a file from the web"
    concepts = (site / "concepts" / "dpo.html").read_text(encoding="utf-8")
    assert concepts.count('class="math-display"') >= 3 and "math-source" not in concepts
