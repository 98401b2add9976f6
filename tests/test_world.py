"""The toy world: prompts, styles, the ground-truth reward, the rater, the candidate set."""

import math

import pytest

from minirlhf import world

FRANCE = world.make_prompt("France")


def test_prompt_format_and_inverse():
    assert FRANCE == "Q: What is the capital of France? A:"
    assert world.country_of_prompt(FRANCE) == "France"


def test_unknown_country_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="Unknown country 'Atlantis'.*France"):
        world.make_prompt("Atlantis")


def test_prompt_not_in_format_is_refused():
    with pytest.raises(ValueError, match="not in the toy world's format"):
        world.country_of_prompt("What's the capital of France?")


def test_splits_are_disjoint_and_cover_the_table():
    train, held_out = set(world.prompts("train")), set(world.prompts("held_out"))
    assert not train & held_out
    assert len(train) + len(held_out) == len(world.COUNTRIES)
    with pytest.raises(ValueError, match="split must be"):
        world.prompts("validation")


@pytest.mark.parametrize("response, expected", [
    ("The capital of France is Paris.", 1.0),
    ("The capital of France is Paris .", 1.0),  # decoded spacing is normalised
    ("There are several capitals, but Paris is the official capital.", 0.0),
    ("The capital of France is Berlin.", -1.0),
    ("There are several capitals, but Rome is the official capital.", -1.5),
    ("The capital of Germany is Berlin.", -2.0),  # about the wrong country
    ("The capital of France is Gotham.", -2.0),  # not a city of the table
    ("Paris Paris Paris", -2.0),
    ("", -2.0),
])
def test_true_reward_on_each_style_and_on_garbage(response, expected):
    assert world.true_reward(FRANCE, response) == expected


def test_style_mix_responses_have_the_right_kind():
    assert world.classify_response(FRANCE, world.make_response("France", "correct")) == "correct"
    assert world.classify_response(FRANCE, world.make_response("France", "wrong", "Rome")) == "wrong"
    assert world.classify_response(FRANCE, world.make_response("France", "hedge")) == "hedge"
    with pytest.raises(ValueError, match="city other than"):
        world.make_response("France", "wrong", "Paris")


def test_rater_probabilities_follow_bradley_terry():
    rater = world.SimulatedRater(tau=1.0, seed=0)
    paris, berlin = "The capital of France is Paris.", "The capital of France is Berlin."
    p = rater.prob_prefers_first(FRANCE, paris, berlin)
    assert p == pytest.approx(1 / (1 + math.exp(-2.0)))  # r difference 1 - (-1) = 2
    assert rater.prob_prefers_first(FRANCE, berlin, paris) == pytest.approx(1 - p)
    assert rater.prob_prefers_first(FRANCE, paris, paris) == 0.5
    assert rater.bayes_accuracy(FRANCE, berlin, paris) == pytest.approx(p)


def test_rater_choices_are_seeded_and_match_their_probability():
    paris, hedge = "The capital of France is Paris.", world.make_response("France", "hedge")
    draws = [world.SimulatedRater(seed=1).prefers_first(FRANCE, paris, hedge) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same first judgement
    rater = world.SimulatedRater(tau=1.0, seed=0)
    wins = sum(rater.prefers_first(FRANCE, paris, hedge) for _ in range(4000)) / 4000
    assert wins == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.03)


def test_rater_refuses_non_positive_tau():
    with pytest.raises(ValueError, match="tau must be > 0"):
        world.SimulatedRater(tau=0)


def test_candidate_set_is_every_template_times_every_city():
    candidates = world.candidate_responses(FRANCE)
    assert len(candidates) == 2 * len(world.CITIES) == len(set(candidates))
    assert candidates[0] == "The capital of France is Paris."
    kinds = [world.classify_response(FRANCE, y) for y in candidates]
    assert kinds.count("correct") == 1 and kinds.count("hedge") == 1
    assert "malformed" not in kinds
