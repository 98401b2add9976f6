"""The notebooks' widgets say what they computed, with counts, and offer the range the lesson needs:
the labelling panel's summary and its fallback when nobody clicked, and the beta explorer's slider
and axes. (The panel's clicks and data are tested in test_preferences.py.)"""

import matplotlib
import pytest

from minirlhf import world
from minirlhf.widgets import BETA_STEPS, LabelingPanel, LabelingSession, beta_explorer

matplotlib.use("Agg")

FRANCE = world.make_prompt("France")
PARIS = world.make_response("France", "correct")
BERLIN, ROME, MADRID = (world.make_response("France", "wrong", city) for city in ("Berlin", "Rome", "Madrid"))


def test_the_agreement_says_from_how_many_pairs_it_comes():
    # three labels, of which two compare two wrong cities (equal true reward: no right answer)
    session = LabelingSession([(FRANCE, BERLIN, ROME), (FRANCE, PARIS, BERLIN), (FRANCE, MADRID, ROME)])
    for choice in ("left", "left", "right"):
        session.choose(choice)
    counts = session.agreement_counts()
    assert counts == {"labelled": 3, "skipped": 0, "compared": 1, "agreed": 1, "ties": 2}
    assert session.agreement_with_true_reward() == 1.0
    summary = session.summary()
    assert "You labelled 3 pairs (0 skipped)" in summary
    assert "picked the better one in 1 of 1" in summary
    assert "2 pairs compared two answers of equal true reward" in summary and "left out" in summary


def test_with_no_label_it_says_so_and_falls_back_to_the_simulated_rater():
    pairs = [(FRANCE, PARIS, BERLIN), (FRANCE, BERLIN, ROME)]
    session = LabelingSession(pairs)
    assert "No pair labelled yet" in session.summary() and "simulated rater" in session.summary()
    data = session.labels_or_simulated()  # what Run All gets: the same pairs, rated by the simulation
    assert len(data) == 2 and sorted(data["prompt"]) == [FRANCE, FRANCE]
    assert {frozenset((c, r)) for c, r in zip(data["chosen"], data["rejected"])} == \
        {frozenset(p[1:]) for p in pairs}
    session.choose("left")
    assert session.labels_or_simulated()["chosen"] == [PARIS]  # a person's labels win


def test_the_live_panel_shows_the_summary():
    panel = LabelingPanel(LabelingSession([(FRANCE, BERLIN, ROME), (FRANCE, PARIS, BERLIN)]))
    assert "equal true reward" not in panel.count.value
    panel.buttons["left"].click()
    assert "1 pair compared two answers of equal true reward" in panel.count.value


@pytest.fixture(scope="module")
def evaluator(base):
    from minirlhf.optimum import ExactEvaluator

    model, tokenizer = base
    return ExactEvaluator(model, tokenizer, [FRANCE])


def test_the_beta_explorer_spans_the_lessons_range_on_fixed_axes(evaluator):
    explorer = beta_explorer(evaluator)
    assert explorer.value == 0.5 and explorer.betas == BETA_STEPS
    assert explorer.betas[0] <= 0.1 and explorer.betas[-1] >= 100  # notebook 01 checks beta = 100
    slider = explorer.widget().children[0]
    assert slider.value == 0.5 and slider.label == "0.5"  # starts where the stored picture is
    assert [value for _, value in slider.options] == list(BETA_STEPS)
    limits, labels = set(), set()
    for beta in (0.01, 0.5, 100.0):
        fig = explorer.figure(beta)
        ax = fig.axes[0]
        limits.add(ax.get_ylim())
        labels.add(tuple(t.get_text() for t in ax.get_xticklabels()))
        assert f"beta = {beta:g}" in ax.get_title()
        matplotlib.pyplot.close(fig)
    assert limits == {(0.0, 1.0)} and len(labels) == 1  # the same axes at every position
    assert beta_explorer(evaluator, betas=(0.02, 5.0)).betas == (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    with pytest.raises(ValueError, match="one of the slider's betas"):
        beta_explorer(evaluator, value=0.3)
