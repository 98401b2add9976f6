"""The Bradley-Terry reward model: loss, last-token index, freezing, training, saving."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from minirlhf import world
from minirlhf.evaluation import (best_rank_correlation, candidate_ranking_agreement, candidate_scores,
                                 expected_accuracy, label_scores,
                                 margin_calibration, rank_correlation, ranking_agreement)
from minirlhf.logprobs import encode_prompt_response, last_token_index
from minirlhf.preferences import preference_row
from minirlhf.reward import (RewardConfig, RewardModel, bradley_terry_loss, evaluate_reward_model,
                             load_reward_model, pair_accuracy, reward_metrics, train_reward_model)

FRANCE = world.make_prompt("France")
PARIS, BERLIN = world.make_response("France", "correct"), world.make_response("France", "wrong", "Berlin")
HEDGE = world.make_response("France", "hedge")


# --- the loss -----------------------------------------------------------------------------------

def test_bradley_terry_loss_hand_computed():
    # -log sigmoid(1) = log(1 + e^-1) = 0.313262; -log sigmoid(0) = log 2 = 0.693147
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])
    expected = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(1))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)
    assert bradley_terry_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))


def test_bradley_terry_loss_matches_binary_cross_entropy():
    """An independent implementation: BCE with logits r_w - r_l and target 1."""
    generator = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(32, generator=generator), torch.randn(32, generator=generator)
    reference = F.binary_cross_entropy_with_logits(chosen - rejected, torch.ones(32))
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(reference.item(), rel=1e-6)


def test_bradley_terry_loss_is_stable_for_large_margins():
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([200.0])).item() == pytest.approx(200.0)
    assert bradley_terry_loss(torch.tensor([200.0]), torch.tensor([0.0])).item() == pytest.approx(0.0)


def test_bradley_terry_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([0.5, -1.0], requires_grad=True)
    rejected = torch.tensor([0.0, 1.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert (chosen.grad < 0).all()  # gradient descent pushes r_w up ...
    assert (rejected.grad > 0).all()  # ... and r_l down
    # d/d r_w of -log sigmoid(d) / B = -(1 - sigmoid(d)) / B
    assert chosen.grad[0].item() == pytest.approx(-(1 - torch.sigmoid(torch.tensor(0.5)).item()) / 2)
    assert torch.allclose(chosen.grad, -rejected.grad)


def test_bradley_terry_loss_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        bradley_terry_loss(torch.zeros(0), torch.zeros(0))


def test_pair_accuracy_and_metrics():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0, -3.0])
    assert pair_accuracy(chosen, rejected) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    metrics = reward_metrics(chosen, rejected)
    assert metrics["margin"] == pytest.approx((1 - 1 + 0 + 4) / 4)
    assert metrics["reward/min"] == -3.0 and metrics["reward/max"] == 2.0
    assert metrics["reward/mean"] == pytest.approx((2 + 0 + 1 + 1 + 1 + 1 + 1 - 3) / 8)


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get their average rank: ranks of y are [1.5, 1.5, 3]; of x [1, 2, 3] -> rho = sqrt(3)/2
    assert rank_correlation([1, 2, 3], [5, 5, 7]) == pytest.approx(math.sqrt(3) / 2)


# --- the last-token index --------------------------------------------------------------------------

def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1],   # left padding: last token at 4
                         [1, 1, 1, 0, 0],   # right padding: at 2
                         [0, 1, 1, 1, 0],   # both: at 3
                         [1, 1, 1, 1, 1]])  # none: at 4
    assert last_token_index(mask).tolist() == [4, 2, 3, 4]
    with pytest.raises(ValueError, match="all padding"):
        last_token_index(torch.tensor([[1, 1], [0, 0]]))


def test_score_does_not_depend_on_padding(base):
    model, tokenizer = base
    reward_model = RewardModel.from_base(model).eval()
    torch.nn.init.normal_(reward_model.head.weight, generator=torch.Generator().manual_seed(0))
    alone = reward_model.score_texts(tokenizer, [FRANCE], [PARIS])
    # in a batch with a longer prompt (left padding) and a longer response (right padding)
    batch = reward_model.score_texts(tokenizer, [FRANCE, world.make_prompt("Australia"), FRANCE],
                                     [PARIS, PARIS, HEDGE])
    assert torch.allclose(alone, batch[:1], atol=1e-5)
    # fully right-padded layout (prompt and response both pushed left) gives the same score
    enc = encode_prompt_response(tokenizer, [FRANCE, FRANCE], [PARIS, HEDGE])
    ids, mask = enc["input_ids"][:1], enc["attention_mask"][:1]
    length = int(mask.sum())
    right_ids = torch.cat([ids[mask == 1], ids[mask == 0]])[None]
    right_mask = torch.cat([torch.ones(length), torch.zeros(ids.shape[1] - length)])[None].long()
    with torch.no_grad():
        assert torch.allclose(reward_model(right_ids, right_mask), alone, atol=1e-5)


# --- the model -----------------------------------------------------------------------------------

def pairs_dataset(rows):
    return Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows])


def separable_toy():
    """Correct concise answers always beat hedges: a template tells them apart."""
    rows = []
    for country in world.TRAIN_COUNTRIES[:8]:
        prompt = world.make_prompt(country)
        rows.append((prompt, world.make_response(country, "correct"), world.make_response(country, "hedge")))
    return pairs_dataset(rows)


def test_from_base_copies_and_starts_at_zero(base):
    model, tokenizer = base
    reward_model = RewardModel.from_base(model)
    assert reward_model.backbone is not model.transformer
    assert torch.equal(reward_model.backbone.wte.weight, model.transformer.wte.weight)
    scores = reward_model.score_texts(tokenizer, [FRANCE, FRANCE], [PARIS, BERLIN])
    assert torch.equal(scores, torch.zeros(2))  # zero-initialised head: every answer starts at 0


def test_training_reaches_full_accuracy_on_a_separable_toy(base):
    model, tokenizer = base
    before = model.transformer.wte.weight.clone()
    reward_model = RewardModel.from_base(model)
    data = separable_toy()
    history = train_reward_model(reward_model, tokenizer, data,
                                 RewardConfig(steps=20, batch_size=8, progress=False, eval_every=10),
                                 eval_data=data)
    assert evaluate_reward_model(reward_model, tokenizer, data)["accuracy"] == 1.0
    assert history[-1]["eval/accuracy"] == 1.0 and history[-1]["eval/margin"] > 1.0
    assert history[-1]["loss"] < history[0]["loss"]
    for key in ("loss", "accuracy", "margin", "reward/mean", "reward/min", "reward/max",
                "eval/loss", "eval/accuracy", "eval/reward/max"):
        assert key in history[-1]
    assert torch.equal(model.transformer.wte.weight, before)  # the SFT model is untouched
    # a held-out country: the template alone tells which answer is better
    cuba = world.make_prompt("Cuba")
    scores = reward_model.score_texts(tokenizer, [cuba, cuba], [world.make_response("Cuba", "correct"),
                                                                world.make_response("Cuba", "hedge")])
    assert scores[0] > scores[1]


def test_frozen_backbone_stays_frozen(base):
    model, tokenizer = base
    reward_model = RewardModel.from_base(model, freeze_backbone=True)
    backbone_before = {k: v.clone() for k, v in reward_model.backbone.state_dict().items()}
    assert not any(p.requires_grad for p in reward_model.backbone.parameters())
    train_reward_model(reward_model, tokenizer, separable_toy(),
                       RewardConfig(steps=5, batch_size=4, progress=False))
    for name, value in reward_model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[name]), name
    assert reward_model.head.weight.abs().sum() > 0  # ... while the head learned
    reward_model.train()
    assert not reward_model.backbone.training and reward_model.head.training


def test_attention_only_trains_attention_and_head_only(base):
    model, tokenizer = base
    reward_model = RewardModel.from_base(model, attention_only=True)
    before = {k: v.clone() for k, v in reward_model.backbone.state_dict().items()}
    train_reward_model(reward_model, tokenizer, separable_toy(),
                       RewardConfig(steps=3, batch_size=4, progress=False))
    changed = {k for k, v in reward_model.backbone.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".attn." in k for k in changed)
    assert "h.0.attn.c_attn.weight" in changed and "h.1.attn.c_proj.weight" in changed
    with pytest.raises(ValueError, match="Choose one"):
        RewardModel.from_base(model, freeze_backbone=True, attention_only=True)


def test_normalize_sets_mean_zero_std_one_and_composes(base):
    model, tokenizer = base
    reward_model = RewardModel.from_base(model)
    torch.nn.init.normal_(reward_model.head.weight, generator=torch.Generator().manual_seed(1))
    responses = world.candidate_responses(FRANCE)
    prompts = [FRANCE] * len(responses)
    raw = reward_model.score_texts(tokenizer, prompts, responses)
    # Each score is a float32 forward pass whose rounding depends on the CPU and the batch size
    # (other kernels): it is off by a few ulps of |raw|, and normalising divides that by the std.
    # 64 ulps of the largest raw score, over the std, bounds it with room on any CPU.
    ulps = 64 * torch.finfo(torch.float32).eps * raw.abs().max().item()
    reward_model.normalize(raw)
    normalized = reward_model.score_texts(tokenizer, prompts, responses)
    tol = ulps / raw.std().item()
    assert normalized.mean().item() == pytest.approx(0.0, abs=tol)
    assert normalized.std().item() == pytest.approx(1.0, abs=tol)
    assert torch.allclose(normalized, (raw - raw.mean()) / raw.std(), atol=tol)
    reward_model.normalize(normalized[:10])  # again, on a subset: still (raw - m) / s
    subset = reward_model.score_texts(tokenizer, prompts[:10], responses[:10])
    assert subset.mean().item() == pytest.approx(0.0, abs=ulps / (raw.std() * normalized[:10].std()).item())
    reward_model.reset_normalization()
    assert torch.allclose(reward_model.score_texts(tokenizer, prompts, responses), raw)
    with pytest.raises(ValueError, match="all equal"):
        reward_model.normalize(torch.ones(5))


def test_save_and_load_round_trip(base, tmp_path):
    model, tokenizer = base
    reward_model = RewardModel.from_base(model, attention_only=True)
    torch.nn.init.normal_(reward_model.head.weight, generator=torch.Generator().manual_seed(2))
    reward_model.normalize(torch.tensor([1.0, 2.0, 4.0]))
    before = reward_model.score_texts(tokenizer, [FRANCE, FRANCE], [PARIS, HEDGE])
    reward_model.save(tmp_path / "rm", tokenizer)
    assert (tmp_path / "rm" / "model.safetensors").is_file()
    assert not list((tmp_path / "rm").glob("*.bin")) and not list((tmp_path / "rm").glob("*.pt"))
    loaded, loaded_tokenizer = load_reward_model(tmp_path / "rm")
    assert loaded.attention_only and not loaded.freeze_backbone and not loaded.training
    assert torch.allclose(loaded.score_texts(loaded_tokenizer, [FRANCE, FRANCE], [PARIS, HEDGE]), before)


def test_load_refuses_what_is_not_a_reward_model(base, tmp_path):
    from minirlhf.saved_models import save_model

    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        RewardModel.load(tmp_path / "nothing")
    save_model(*base, tmp_path / "lm")
    with pytest.raises(ValueError, match="no reward model"):
        RewardModel.load(tmp_path / "lm")


def test_bad_training_inputs(base):
    model, tokenizer = base
    reward_model = RewardModel.from_base(model)
    with pytest.raises(ValueError, match="prompt, chosen, rejected"):
        train_reward_model(reward_model, tokenizer, Dataset.from_dict({"prompt": [FRANCE], "good": [PARIS]}))
    with pytest.raises(ValueError, match="learning_rate"):
        RewardConfig(learning_rate=-1.0)
    with pytest.raises(ValueError, match="steps"):
        RewardConfig(steps=0)


def test_expected_accuracy_of_a_perfect_ranking_is_bayes_optimal(base):
    from minirlhf.preferences import bayes_optimal_accuracy

    class TrueReward(RewardModel):
        """Scores with the true reward: the best ranking there is."""

        def score_texts(self, tokenizer, prompts, responses, batch_size=256):
            return torch.tensor([world.true_reward(p, r) for p, r in zip(prompts, responses)])

    model, tokenizer = base
    data = pairs_dataset([(FRANCE, BERLIN, PARIS), (FRANCE, PARIS, HEDGE), (FRANCE, HEDGE, BERLIN)])
    perfect = TrueReward.from_base(model)
    assert expected_accuracy(perfect, tokenizer, data) == pytest.approx(bayes_optimal_accuracy(data))
    scores = candidate_scores(perfect, tokenizer, FRANCE, data)
    assert scores["learned"] == scores["true"] and len(scores["kinds"]) == 48
    assert scores["seen"][:2] == [2, 2] and scores["seen"][24] == 2 and sum(scores["seen"]) == 6
    rated = Dataset.from_list([preference_row(p, c, r) for p, c, r in zip(
        data["prompt"], data["chosen"], data["rejected"])] + [preference_row(FRANCE, PARIS, BERLIN)])
    assert margin_calibration(perfect, tokenizer, rated) == {
        1.0: {"pairs": 2, "learned_margin": 1.0}, 2.0: {"pairs": 2, "learned_margin": 2.0}}


def test_ranking_agreement_and_best_rank_correlation():
    true = [1.0, 0.0, -1.0, -1.0]
    assert ranking_agreement([3.0, 2.0, 1.0, 0.0], true) == 1.0  # any order inside a tie is fine
    assert ranking_agreement([0.0, 2.0, 1.0, 3.0], true) == pytest.approx(1 / 5)  # only 2 > 1 right
    # rho against a strict order cannot reach 1 when the truth has ties
    best = best_rank_correlation(true)
    assert best == pytest.approx(rank_correlation([4, 3, 2, 1], true)) and best < 1
    assert best_rank_correlation([1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_candidate_ranking_agreement_counts_every_pair_or_the_pairs_a_model_shows(base):
    class FormatBlind(RewardModel):
        """Right about the city, blind to the format: a hedge scores as its concise answer."""

        def score_texts(self, tokenizer, prompts, responses, batch_size=256):
            return torch.tensor([1.0 if world.classify_response(p, r) in ("correct", "hedge") else -1.0
                                 for p, r in zip(prompts, responses)])

    model, tokenizer = base
    blind = FormatBlind.from_base(model)
    # Of France's 622 candidate pairs with different true reward, the blind model ties 530 (Paris vs
    # its hedge, and the 23 x 23 concise wrong cities vs hedged wrong cities): each counts 1/2
    true = [world.true_reward(FRANCE, r) for r in world.candidate_responses(FRANCE)]
    learned = blind.score_texts(tokenizer, [FRANCE] * 48, world.candidate_responses(FRANCE)).tolist()
    expected = ranking_agreement(learned, true)
    assert candidate_ranking_agreement(blind, tokenizer, [FRANCE]) == pytest.approx(expected)
    assert expected == pytest.approx(1 - 0.5 * (1 + 529) / 622)
    # weighted by a model that only ever says Paris or Berlin, the blind model is always right
    probs = torch.zeros(1, 48)
    probs[0, 0] = 0.5
    probs[0, world.candidate_responses(FRANCE).index(BERLIN)] = 0.5
    assert candidate_ranking_agreement(blind, tokenizer, [FRANCE], set_probs=probs) == pytest.approx(1.0)
    # ... and by one that says Paris or its hedge, it is a coin (a tie counts 1/2)
    probs = torch.zeros(1, 48)
    probs[0, 0] = probs[0, 24] = 0.5
    assert candidate_ranking_agreement(blind, tokenizer, [FRANCE], set_probs=probs) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        candidate_ranking_agreement(blind, tokenizer, [FRANCE], set_probs=torch.ones(2, 48))


def test_label_scores_fit_one_score_per_answer_to_the_labels_alone():
    # Paris beats Berlin 3 times and loses once: the Bradley-Terry fit has P(Paris > Berlin) = 3/4,
    # so the score difference is log 3, split evenly around 0 by the (tiny) L2 term.
    data = pairs_dataset([(FRANCE, PARIS, BERLIN)] * 3 + [(FRANCE, BERLIN, PARIS)]
                         + [(world.make_prompt("Japan"), "x", "y")] * 5)  # another prompt: ignored
    paris, berlin, hedge = label_scores(data, FRANCE, [PARIS, BERLIN, HEDGE], l2=1e-8)
    assert paris - berlin == pytest.approx(math.log(3), abs=1e-4)
    assert paris == pytest.approx(-berlin, abs=1e-4)
    assert math.isnan(hedge)  # no pair shows it
    # an answer that never lost stays finite, and a chain is ordered
    chain = pairs_dataset([(FRANCE, PARIS, HEDGE)] * 2 + [(FRANCE, HEDGE, BERLIN)] * 2)
    paris, hedge, berlin = label_scores(chain, FRANCE, [PARIS, HEDGE, BERLIN])
    assert math.isfinite(paris) and paris > hedge > berlin
    with pytest.raises(ValueError, match="No rated pair"):
        label_scores(chain, world.make_prompt("Japan"), [PARIS])
