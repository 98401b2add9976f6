"""One source for every number: the README and the docs pages show what the runs wrote, never a number
typed by hand, so a rerun cannot leave a page behind.

* README.md is what ``scripts/make_readme.py`` writes, and its figure's data are current;
* every ``{result}`` role on a page names a value that is in ``benchmarks/results/`` now;
* the drift test: no page shows a number with a decimal point or a percent sign that is not pasted
  from a run (``{result}``, ``{glue:text}``), marked as given (``{given}``: a paper's number with its
  citation, a target), or matched by one entry of the short allow-list below (each with its reason).
"""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import run_results  # noqa: E402

GENERATED = ("notebooks", "exercises", "api", "_generated", "_build")

# At most 15 entries: (pattern, why a number it matches is not a measured result).
ALLOWED = [
    (r"(?i)\b(?:trl|torch|pytorch|accelerate|transformers|python|datasets|jupyterlab|myst-nb|sphinx|nbval|"
     r"minirlhf)(?:'s)?\s*(?:==|>=|<=|<|>)?\s*\d+(?:\.\d+)+", "a software version"),
    (r"(?i)\b(?:beta|β|tau|temperature|learning rate|lr|epsilon|eps|clip range|alpha)\s*(?:=|is)?\s*"
     r"\d+(?:\.\d+)?(?:e-?\d+)?(?:\s*(?:/|,|and|or|to)\s*\d+(?:\.\d+)?(?:e-?\d+)?)*",
     "a setting chosen for a run, not a result of one"),
    (r"(?i)\b(?:section|step|stage|notebook|figure|table)s?\s+\d+(?:\.\d+)+", "a section number"),
    (r"(?<![\w.])[-+]?(?:1\.5|0\.5)\b(?=[^.\n]{0,40}(?:hedge|wrong city|true reward|r = |reward of))",
     "the true reward's definition (minirlhf.world.true_reward)"),
    (r"(?<![\w.])(?:0|1)\.0\b", "the ends of a probability or attainment scale (0 and 1), a definition"),
]
assert len(ALLOWED) <= 15

NUMBER = re.compile(r"(?<![\w.])[-+−]?\d*\.\d+%?|(?<![\w.])\d+%")
STRIP = [
    re.compile(r"```.*?```", re.S),                      # code blocks: commands and code
    re.compile(r"<!--.*?-->", re.S),                     # comments
    run_results.ROLE,                                    # pasted from a run, or marked as given
    re.compile(r"\{(?:doc|ref|mod|func|class|meth|attr|glue:figure|glue)\}`[^`]*`"),
    re.compile(r"`[^`\n]*`"),                            # inline code: names and commands
    re.compile(r"\]\([^)]*\)"),                          # link targets
    re.compile(r"^\s*:[\w-]+:.*$", re.M),                # directive options (:width: 100%)
    re.compile(r"https?://\S+"),
]


def pages() -> list[Path]:
    found = [ROOT / "scripts" / "README.template.md"]  # README.md is generated from it
    for page in sorted(DOCS.rglob("*.md")):
        if page.relative_to(DOCS).parts[0] not in GENERATED:
            found.append(page)
    return found


def unpasted_numbers(text: str) -> list[str]:
    """The numbers of ``text`` that no run pasted, no ``{given}`` marks and no allow-list entry
    explains, each with its line."""
    for pattern in STRIP:
        text = pattern.sub(" ", text)
    for pattern, _ in ALLOWED:
        text = re.sub(pattern, " ", text, flags=re.M)
    found = []
    for line in text.splitlines():
        found += [f"{m.group().strip()}  in: {line.strip()[:140]}" for m in NUMBER.finditer(line)]
    return found


def test_the_drift_test_finds_a_typed_number_and_accepts_pasted_ones():
    assert unpasted_numbers("PPO reaches 0.989 on training countries.")
    assert unpasted_numbers("it leaks 85% of its mass")
    assert not unpasted_numbers("PPO reaches {result}`ppo_gt.json > x ; .3f` at beta 0.1.")
    assert not unpasted_numbers("P(Berlin) {glue:text}`../notebooks/01_sft_tiny_gpt.ipynb::p_berlin:.3f`")
    assert not unpasted_numbers("```bash\npython x.py --lr 0.5\n```\nand `lr=0.3`, with TRL 1.16")
    assert not unpasted_numbers("Rafailov et al. report {given}`0.61 (Rafailov et al., 2023)`.")


def test_no_page_shows_a_number_typed_by_hand():
    drift = {str(page.relative_to(ROOT)): unpasted_numbers(page.read_text(encoding="utf-8"))
             for page in pages()}
    drift = {page: numbers for page, numbers in drift.items() if numbers}
    report = "\n".join(f"{page}:\n  " + "\n  ".join(numbers) for page, numbers in drift.items())
    assert not drift, ("numbers typed by hand (paste them from a run with {result} or {glue:text}, "
                       "or mark a paper's number with {given}):\n" + report)


def test_every_result_role_names_a_current_value():
    roles = [(page, body) for page in pages() for role, body in
             run_results.ROLE.findall(page.read_text(encoding="utf-8")) if role == "result"]
    assert len(roles) >= 10
    for page, body in roles:
        try:
            run_results.result(body)
        except run_results.ResultError as error:
            pytest.fail(f"{page.relative_to(ROOT)}: {error}")


def test_a_result_role_reads_the_file_and_refuses_what_it_cannot_read():
    summary = json.loads((run_results.RESULTS / "dpo.json").read_text())["summary"]
    offline = [row for row in summary if row["method"] == "offline" and row["beta"] == 0.1]
    assert run_results.result("dpo.json > summary > [method=offline, beta=0.1] > train_attainment_median"
                              " ; .3f") == f"{offline[0]['train_attainment_median']:.3f}"
    for bad in ("nope.json > a", "dpo.json > summary > [method=none]", "dpo.json > summary ; .3f",
                "../README.md", "dpo.json > rows > rater_labels ; wobble ; d"):
        with pytest.raises(run_results.ResultError):
            run_results.result(bad)


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_readme():
    return _load_script(ROOT / "scripts" / "make_readme.py")


def test_the_readme_is_what_the_script_writes():
    assert _make_readme().main(["--check"]) == 0, "README.md is stale: run python scripts/make_readme.py"


def test_the_readme_is_a_short_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", " ", text, flags=re.S)
    assert len(re.findall(r"[A-Za-z][\w'-]*", prose)) <= 900
    results = prose.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert len([line for line in results.splitlines() if line.startswith("| ") and "---" not in line]) <= 6


def test_the_readme_figure_shows_the_shipped_model_and_the_current_results():
    """The data behind the figure are the results file's, and the results file's SFT probabilities
    are the shipped model's, computed exactly now."""
    from minirlhf.saved_models import load_base_model
    from minirlhf.optimum import ExactEvaluator, with_outside
    from minirlhf.world import make_prompt

    make_readme = _make_readme()
    stored = json.loads(make_readme.FIGURE_DATA.read_text(encoding="utf-8"))
    assert stored == make_readme.figure_data(), "the figure is stale: run python scripts/make_readme.py"
    france = json.loads((run_results.RESULTS / "frontier.json").read_text(encoding="utf-8"))["france"]
    model, tokenizer = load_base_model()
    evaluator = ExactEvaluator(model, tokenizer, [make_prompt("France")])
    assert evaluator.candidates[0] == france["candidates"][:-1]
    now = with_outside(evaluator.ref_set_probs[0])
    assert torch.allclose(now, torch.tensor(france["probs"]["pi_ref"]), atol=2e-3), \
        "frontier.json's pi_ref is not the shipped model's: rerun benchmarks/frontier.py"
    assert stored["probs"]["SFT model (pi_ref)"][0] > stored["probs"]["SFT model (pi_ref)"][1]  # Berlin first


def test_the_results_page_claims_hold_for_its_label_budget_runs():
    """docs/results.md reads the label-budget figure: PPO-RM ahead of both DPOs from about a thousand
    labels on, online DPO catching up only at the largest budget, PPO-RM below zero at the smallest."""
    runs = json.loads((run_results.RESULTS / "label_budget.json").read_text())["runs"]
    at = {(run["method"], run["budget"]): run["attainment"] for run in runs}
    budgets = sorted({budget for _, budget in at})
    assert at[("PPO-RM", budgets[0])] < 0
    for budget in budgets[1:]:
        assert at[("PPO-RM", budget)] > max(at[("DPO", budget)], at[("Online DPO", budget)]), budget
    assert at[("Online DPO", budgets[-1])] > 0.9 * at[("PPO-RM", budgets[-1])]
    assert at[("Online DPO", budgets[-2])] < 0.8 * at[("PPO-RM", budgets[-2])]
    assert at[("DPO", budgets[-1])] < 0.6 * at[("PPO-RM", budgets[-1])]


def test_every_figure_the_readme_and_the_results_page_show_is_drawn_from_the_current_results(tmp_path):
    """Each figure redrawn from its results file by the script that wrote it matches the stored one,
    so a rerun that changes the file without the figure (or the reverse) fails here."""
    from matplotlib.testing.compare import compare_images

    frontier = _load_script(ROOT / "benchmarks" / "frontier.py")
    label_budget = _load_script(ROOT / "benchmarks" / "label_budget.py")
    make_readme = _make_readme()
    frontier.save_figure(json.loads((run_results.RESULTS / "frontier.json").read_text()), tmp_path / "f.png")
    budget = json.loads((run_results.RESULTS / "label_budget.json").read_text())
    label_budget.plot(budget["runs"], budget["beta"], tmp_path / "l.png")
    make_readme.draw_figure(make_readme.figure_data()).savefig(tmp_path / "r.png", dpi=110,
                                                               metadata={"Software": None})
    for new, stored in [("f.png", run_results.RESULTS / "frontier.png"),
                        ("l.png", run_results.RESULTS / "label_budget.png"), ("r.png", make_readme.FIGURE)]:
        assert compare_images(str(stored), str(tmp_path / new), tol=1) is None, \
            f"{stored.relative_to(ROOT)} is not what its results file draws now: rerun its script"


def test_the_frontier_in_the_results_is_the_shipped_models():
    """frontier.json's exact curve (the line of the frontier figure) is the shipped SFT model's."""
    from minirlhf.compare import frontier_curve
    from minirlhf.saved_models import load_base_model
    from minirlhf.optimum import ExactEvaluator
    from minirlhf.world import TRAIN_COUNTRIES, make_prompt

    stored = json.loads((run_results.RESULTS / "frontier.json").read_text())["curve"]
    model, tokenizer = load_base_model()
    evaluator = ExactEvaluator(model, tokenizer, [make_prompt(c) for c in TRAIN_COUNTRIES])
    now = frontier_curve(evaluator)
    assert len(now) == len(stored)
    for old, new in zip(stored, now):
        assert abs(old["kl"] - new["kl"]) < 2e-3 and abs(old["reward"] - new["reward"]) < 2e-3, (old, new)


@pytest.mark.parametrize("name", ["frontier", "label_budget", "grpo_long_runs", "scoreboard"])
def test_the_runs_notebooks_05_06_and_07_read_are_the_current_results(name):
    from minirlhf import cached_runs

    if name == "grpo_long_runs":  # every grpo*.json, by file name
        current = {f.name: json.loads(f.read_text()) for f in sorted(run_results.RESULTS.glob("grpo*.json"))}
    else:
        current = json.loads((run_results.RESULTS / f"{name}.json").read_text())
    assert cached_runs.load(name) == current, (
        f"minirlhf/cached_runs/{name}.json differs from benchmarks/results: rerun the benchmark that "
        f"wrote it (with --notebook-cache where it has that option)")
    with pytest.raises(ValueError, match="cached runs are"):
        cached_runs.load("frontier.json")
