"""Preference data: collection with the simulated rater, loading other data, the labeling panel."""

import json

import pytest
from datasets import Dataset, DatasetDict

from minirlhf import world
from minirlhf.preferences import (bayes_optimal_accuracy, collect_preferences, default_preferences,
                                  label_pairs, load_preferences, on_policy_pairs, sample_response_pairs)
from minirlhf.widgets import LabelingPanel, LabelingSession

FRANCE = world.make_prompt("France")
PARIS, BERLIN = world.make_response("France", "correct"), world.make_response("France", "wrong", "Berlin")
HEDGE = world.make_response("France", "hedge")


# --- collection ----------------------------------------------------------------------------------

def test_collect_preferences_columns_rewards_and_seed(base):
    model, tokenizer = base
    prompts = world.prompts("train")[:3]
    data = collect_preferences(model, tokenizer, prompts, pairs_per_prompt=4, seed=1, progress=False)
    assert data.column_names == ["prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"]
    assert data["prompt"] == [p for p in prompts for _ in range(4)]
    for row in data:
        assert row["chosen"] != row["rejected"]
        assert row["chosen_reward"] == world.true_reward(row["prompt"], row["chosen"])
        assert row["rejected_reward"] == world.true_reward(row["prompt"], row["rejected"])
    again = collect_preferences(model, tokenizer, prompts, pairs_per_prompt=4, seed=1, progress=False)
    assert again.to_list() == data.to_list()


def test_default_preferences_are_cached_but_each_call_gets_its_own_dict():
    first = default_preferences(pairs_per_prompt=2, progress=False)
    assert set(first) == {"train", "test"} and len(first["train"]) + len(first["test"]) == 40
    first["train"] = None  # reassigning a split must not change what the next caller gets
    second = default_preferences(pairs_per_prompt=2, progress=False)
    assert second["train"] is not None and second["test"] is first["test"]


def test_sampled_pairs_and_bad_arguments(base):
    model, tokenizer = base
    pairs = sample_response_pairs(model, tokenizer, [FRANCE], pairs_per_prompt=5, progress=False)
    assert len(pairs) == 5 and all(p == FRANCE and a != b for p, a, b in pairs)
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        sample_response_pairs(model, tokenizer, [FRANCE], pairs_per_prompt=0)
    with pytest.raises(ValueError, match="No prompts"):
        sample_response_pairs(model, tokenizer, [], pairs_per_prompt=2)


def test_label_pairs_follows_a_nearly_perfect_rater():
    pairs = [(FRANCE, BERLIN, PARIS), (FRANCE, PARIS, HEDGE)] * 10
    data = label_pairs(pairs, world.SimulatedRater(tau=0.01, seed=0))
    assert all(c > r for c, r in zip(data["chosen_reward"], data["rejected_reward"]))


def test_on_policy_pairs_are_distinct_answers_judged_by_the_rater(base):
    model, tokenizer = base
    prompts = world.prompts("train")[:3]
    sharp_rater = world.SimulatedRater(tau=0.01, seed=0)  # prefers the truly better answer
    data = on_policy_pairs(model, tokenizer, prompts, pairs_per_prompt=6, rater=sharp_rater, seed=0)
    assert data.column_names == ["prompt", "chosen", "rejected"]
    assert 0 < len(data) <= 3 * 6          # identical pairs are dropped, never more than asked
    assert set(data["prompt"]) <= set(prompts)
    for row in data:
        assert row["chosen"] != row["rejected"]
        assert (world.true_reward(row["prompt"], row["chosen"])
                >= world.true_reward(row["prompt"], row["rejected"]))
    again = on_policy_pairs(model, tokenizer, prompts, pairs_per_prompt=6,
                            rater=world.SimulatedRater(tau=0.01, seed=0), seed=0)
    assert again["chosen"] == data["chosen"]  # seeded: the same pairs again


def test_bayes_optimal_accuracy_hand_computed():
    # P(Paris > Berlin) = sigmoid(2) = 0.8808; P(Paris > hedge) = sigmoid(1) = 0.7311
    data = label_pairs([(FRANCE, BERLIN, PARIS), (FRANCE, PARIS, HEDGE)], world.SimulatedRater(seed=0))
    assert bayes_optimal_accuracy(data) == pytest.approx((0.880797 + 0.731059) / 2, abs=1e-5)


# --- loading other data --------------------------------------------------------------------------

def rows(n=2):
    return [{"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN, "source": "me"}] * n


def test_load_preferences_from_dataset_list_and_files(tmp_path):
    data = load_preferences(Dataset.from_list(rows()))
    assert data.column_names == ["prompt", "chosen", "rejected", "source"]
    assert load_preferences(rows()).to_list() == data.to_list()
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows()) + "\n")
    (tmp_path / "p.json").write_text(json.dumps(rows()))
    (tmp_path / "c.json").write_text(json.dumps({k: [r[k] for r in rows()] for k in rows()[0]}))
    data.to_csv(tmp_path / "p.csv", index=False)
    for name in ("p.jsonl", "p.json", "c.json", "p.csv"):
        assert load_preferences(tmp_path / name).to_list() == data.to_list(), name
        assert load_preferences(str(tmp_path / name)).to_list() == data.to_list(), name


def test_load_preferences_normalises_whitespace_and_renames_columns():
    raw = [{"question": f" {FRANCE} ", "good": PARIS + "\n", "bad": BERLIN}]
    data = load_preferences(raw, columns={"question": "prompt", "good": "chosen", "bad": "rejected"})
    assert data.to_list() == [{"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN}]


@pytest.mark.parametrize("bad, message", [
    ([{"prompt": FRANCE, "chosen": PARIS}], r"lack the column\(s\) \['rejected'\]"),
    ([{"prompt": FRANCE, "chosen": "", "rejected": BERLIN}], "'chosen' is empty"),
    ([{"prompt": FRANCE, "chosen": PARIS, "rejected": "   "}], "'rejected' is empty"),
    ([{"prompt": "", "chosen": PARIS, "rejected": BERLIN}], "'prompt' is empty"),
    ([{"prompt": FRANCE, "chosen": PARIS, "rejected": PARIS + " "}], "identical"),
    ([{"prompt": FRANCE, "chosen": 3, "rejected": BERLIN}], "'chosen' must be a string, got int"),
    ([{"prompt": FRANCE, "chosen": PARIS, "rejected": None}], "'rejected' must be a string, got NoneType"),
    ([{"prompt": FRANCE, "chosen": [{"role": "assistant", "content": PARIS}], "rejected": BERLIN}],
     "Conversational"),
    ([], "empty"),
])
def test_load_preferences_bad_inputs(bad, message):
    with pytest.raises(ValueError, match=message):
        load_preferences(bad)


def test_load_preferences_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="one split"):
        load_preferences(DatasetDict({"train": Dataset.from_list(rows())}))
    with pytest.raises(FileNotFoundError):
        load_preferences(tmp_path / "missing.jsonl")
    (tmp_path / "p.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"\.json, \.jsonl or \.csv"):
        load_preferences(tmp_path / "p.txt")
    with pytest.raises(ValueError, match="renames"):
        load_preferences(rows(), columns={"answer": "chosen"})
    with pytest.raises(ValueError, match="Row 1: 'chosen' is empty"):
        (tmp_path / "gap.csv").write_text(f"prompt,chosen,rejected\n{FRANCE},{PARIS},{BERLIN}\n{FRANCE},,x\n")
        load_preferences(tmp_path / "gap.csv")


# --- the labeling panel --------------------------------------------------------------------------

PAIRS = [(FRANCE, PARIS, BERLIN), (FRANCE, HEDGE, PARIS), (FRANCE, BERLIN, HEDGE)]


def test_labeling_session_state_machine():
    session = LabelingSession(PAIRS)
    assert session.current == PAIRS[0] and session.status() == "0 labelled, 0 skipped, 3 to go"
    session.choose("left")  # Paris over Berlin
    session.choose("skip")
    assert session.current == PAIRS[2] and (session.n_labeled, session.n_skipped) == (1, 1)
    session.undo()  # back to the skipped pair
    assert session.current == PAIRS[1]
    session.choose("right")  # Paris over the hedge
    session.choose("left")  # Berlin over the hedge: disagrees with the true reward
    assert session.done and session.current is None
    assert session.status() == "3 labelled, 0 skipped, 0 to go"
    data = session.to_dataset()
    assert data["chosen"] == [PARIS, PARIS, BERLIN] and data["rejected"] == [BERLIN, HEDGE, HEDGE]
    assert data["chosen_reward"] == [1.0, 1.0, -1.0]
    assert session.agreement_with_true_reward() == pytest.approx(2 / 3)
    assert load_preferences(data).num_rows == 3  # the panel's data pass the loader's checks
    with pytest.raises(ValueError, match="already labelled"):
        session.choose("left")


def test_labeling_session_bad_input_and_empty_result():
    with pytest.raises(ValueError, match="No pairs"):
        LabelingSession([])
    with pytest.raises(ValueError, match="same answer twice"):
        LabelingSession([(FRANCE, PARIS, PARIS)])
    session = LabelingSession(PAIRS)
    with pytest.raises(ValueError, match="Nothing to undo"):
        session.undo()
    with pytest.raises(ValueError, match="choice must be one of"):
        session.choose("both")
    session.choose("skip")
    empty = session.to_dataset()
    assert len(empty) == 0 and "chosen" in empty.column_names
    assert session.agreement_with_true_reward() is None


def test_labeling_panel_buttons_drive_the_session(base):
    panel = LabelingPanel(LabelingSession(PAIRS))
    assert "France" in panel.prompt.value and panel.answers["left"].value == PARIS
    assert panel.buttons["undo"].disabled
    panel.buttons["right"].click()
    assert panel.answers["left"].value == HEDGE and panel.count.value.startswith("1 labelled")
    panel.buttons["undo"].click()
    panel.buttons["left"].click()
    panel.buttons["skip"].click()
    panel.buttons["left"].click()
    assert panel.session.done and panel.buttons["left"].disabled
    assert "All pairs done" in panel.prompt.value
    assert panel.session.to_dataset()["chosen"] == [PARIS, BERLIN]
    # sampled from the SFT model
    model, tokenizer = base
    session = LabelingSession.from_model(model, tokenizer, n_pairs=5, seed=0)
    assert len(session.pairs) == 5 and all(left != right for _, left, right in session.pairs)
