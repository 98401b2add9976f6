"""SFT: the masked loss, that training improves it, and that the base model mirrors the corpus."""

import copy
from collections import Counter

import pytest
import torch

from minirlhf import world
from minirlhf.data import sft_corpus
from minirlhf.logprobs import encode_prompt_response, token_logprobs
from minirlhf.optimum import answer_kind_probs
from minirlhf.logprobs import response_logprobs
from minirlhf.sft import SFTConfig, sft_loss, train_sft
from minirlhf.training import lr_factor


def test_sft_loss_by_hand():
    logprobs = torch.tensor([[-9.0, -1.0, -2.0, -0.0], [-9.0, -9.0, -3.0, -5.0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]])
    # response tokens: -1, -2 (row 0) and -3 (row 1): mean NLL over the 3 tokens = 2
    assert sft_loss(logprobs, mask).item() == pytest.approx(2.0)


def test_sft_loss_ignores_prompt_and_padding_tokens(tiny):
    model, tokenizer = tiny
    batch = encode_prompt_response(tokenizer, [world.make_prompt("France")],
                                   ["The capital of France is Paris."])
    logp = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    loss = sft_loss(logp, batch["response_mask"])
    model.zero_grad()
    loss.backward()
    # gradients of the loss flow to response logits only: the prompt's own tokens are given
    changed = logp.detach().clone()
    changed[0, :11] -= 100.0
    assert sft_loss(changed, batch["response_mask"]).item() == pytest.approx(loss.item())


def test_empty_batch_of_responses_is_refused():
    with pytest.raises(ValueError, match="no response tokens"):
        sft_loss(torch.zeros(2, 3), torch.zeros(2, 3))


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="learning_rate must be"):
        SFTConfig(learning_rate=0)
    with pytest.raises(ValueError, match="needs a 'response' column"):
        from datasets import Dataset

        train_sft(None, None, Dataset.from_dict({"prompt": ["x"]}))


def test_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)


def test_short_sft_lowers_the_loss_and_prefers_the_corpus_answers(tiny):
    model, tokenizer = tiny
    history = train_sft(model, tokenizer, sft_corpus(wrong_per_city=1),
                        SFTConfig(steps=300, learning_rate=5e-3, progress=False, log_every=10))
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    kinds = answer_kind_probs(model, tokenizer, world.prompts("all"))
    # after a short run the model answers mostly in the corpus' templates, as often as the corpus:
    # a wrong city (mostly the country's confusion) first, then the correct one, then a hedge
    assert kinds["outside"].mean() < 0.3
    assert kinds["wrong"].mean() > kinds["correct"].mean() > kinds["hedge"].mean() > 0.05


def test_shipped_base_model_mirrors_the_corpus_mix(base):
    """The documented behaviour of the shipped checkpoint: within 5 points of 25/60/15."""
    model, tokenizer = base
    kinds = answer_kind_probs(model, tokenizer, world.prompts("all"))
    france = world.prompts("all").index(world.make_prompt("France"))
    for style in ("correct", "wrong", "hedge"):
        assert kinds[style][france].item() == pytest.approx(world.STYLE_MIX[style], abs=0.05)
        assert kinds[style].mean().item() == pytest.approx(world.STYLE_MIX[style], abs=0.05)
    assert kinds["outside"].max() < 0.03


def test_shipped_base_model_says_berlin_first_as_in_the_article(base):
    """As the article's reference model: for France, Berlin most often, Paris still above 15%."""
    model, tokenizer = base
    france = world.make_prompt("France")
    answers = [world.make_response("France", "correct"), world.make_response("France", "wrong", "Berlin")]
    p_paris, p_berlin = response_logprobs(model, tokenizer, [france] * 2, answers).exp().tolist()
    candidates = response_logprobs(model, tokenizer, [france] * 48, world.candidate_responses(france)).exp()
    assert p_berlin == candidates.max().item()  # the single most likely answer
    assert p_berlin > p_paris + 0.1 and p_paris > 0.15


def test_sft_is_repeatable_with_the_same_seed(tiny):
    model, tokenizer = tiny
    twin = copy.deepcopy(model)
    data = sft_corpus(wrong_per_city=1)
    config = SFTConfig(steps=5, progress=False)
    train_sft(model, tokenizer, data, config)
    train_sft(twin, tokenizer, data, config)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_corpus_is_balanced_and_keeps_held_out_capitals_out_of_training_answers():
    corpus = sft_corpus(wrong_per_city=2)
    held_out_capitals = {world.CAPITAL_OF[c] for c in world.HELD_OUT_COUNTRIES}
    for country in ("France", "Cuba"):
        rows = corpus.filter(lambda row, c=country: row["country"] == c)
        styles = Counter(rows["style"])
        assert styles["wrong"] / len(rows) == pytest.approx(world.STYLE_MIX["wrong"], abs=0.005)
        assert styles["correct"] / len(rows) == pytest.approx(world.STYLE_MIX["correct"], abs=0.01)
        wrong = Counter(r.split()[-1].rstrip(".") for r, s in zip(rows["response"], rows["style"])
                        if s == "wrong")
        # a training country's confusion 40% of the time; every other eligible wrong city exactly
        # twice (a held-out country has no confusion)
        confusion = world.CONFUSION.get(country)
        extra = wrong[confusion] - 2 if confusion else 0
        assert extra / len(rows) == pytest.approx(world.CONFUSION_SHARE if confusion else 0, abs=0.005)
        spread = Counter({city: 2 for city in world.wrong_cities(country)})
        assert wrong - Counter({confusion: extra}) == spread
    training_answers = corpus.filter(lambda row: row["country"] in world.TRAIN_COUNTRIES)["response"]
    assert not any(city in answer for answer in training_answers for city in held_out_capitals)


def test_corpus_refuses_a_bad_wrong_per_city():
    with pytest.raises(ValueError, match="wrong_per_city"):
        sft_corpus(wrong_per_city=0)
