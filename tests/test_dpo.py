"""DPO: the pure losses against hand-computed numbers, the metrics, the data checks, the trainer."""

import copy
import dataclasses
import math

import pytest
import torch
from datasets import Dataset

from minirlhf import world
from minirlhf.dpo import DPOConfig, dpo_metrics, implicit_reward, nll_per_token, preference_loss, train_dpo
from minirlhf.evaluation import exact_metrics
from minirlhf.logprobs import response_logprobs
from minirlhf.pairs import (
    CHOSEN,
    PROMPT,
    REJECTED,
    encode_pairs,
    pair_attention_mask,
    pair_logps,
    reference_logps,
)
from minirlhf.online_dpo import OnlineDPOConfig, train_online_dpo
from minirlhf.preferences import check_preference_data

# One pair, chosen first: policy log-probs -1 and -2, reference log-probs -1.5 and -1.5.
# The log-ratio margin is h = (-1 - -1.5) - (-2 - -1.5) = 0.5 + 0.5 = 1.
PAIR = [torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5])]


# The three members of the family, each the losses of minirlhf's one preference_loss
def dpo_loss(*logps, beta):
    return preference_loss(*logps, beta=beta)[0]


def ipo_loss(*logps, beta):
    return preference_loss(*logps, beta=beta, ipo=True)[0]


def conservative_dpo_loss(*logps, beta, label_smoothing):
    return preference_loss(*logps, beta=beta, label_smoothing=label_smoothing)[0]


def test_preference_loss_returns_the_implicit_rewards_detached():
    chosen = PAIR[0].clone().requires_grad_()
    losses, chosen_rewards, rejected_rewards = preference_loss(chosen, *PAIR[1:], beta=0.5)
    assert losses.shape == chosen_rewards.shape == rejected_rewards.shape == (1,)
    assert chosen_rewards.item() == pytest.approx(0.25) and rejected_rewards.item() == pytest.approx(-0.25)
    assert losses.requires_grad and not chosen_rewards.requires_grad
    with pytest.raises(ValueError, match="IPO"):
        preference_loss(*PAIR, beta=0.1, label_smoothing=0.1, ipo=True)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    logps = torch.tensor([-3.0, -0.5, -12.0])
    other = torch.tensor([-1.0, -7.0, -2.0])
    for beta in (0.01, 0.1, 1.0, 10.0):
        loss = dpo_loss(logps, other, logps, other, beta=beta)
        assert torch.allclose(loss, torch.full((3,), math.log(2)))


def test_dpo_loss_hand_computed():
    # beta * h = 0.5 * 1 = 0.5, and -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077
    assert dpo_loss(*PAIR, beta=0.5).item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    assert dpo_loss(*PAIR, beta=0.5).item() == pytest.approx(0.474077, abs=1e-6)
    # swapping chosen and rejected flips the sign of the margin: log(1 + e^0.5) = 0.974077
    swapped = [PAIR[1], PAIR[0], PAIR[3], PAIR[2]]
    assert dpo_loss(*swapped, beta=0.5).item() == pytest.approx(0.974077, abs=1e-6)


def test_ipo_loss_hand_computed():
    # (h - 1 / (2 beta))^2: beta = 0.25 -> (1 - 2)^2 = 1; beta = 0.5 -> (1 - 1)^2 = 0; beta = 1 -> 0.25
    assert ipo_loss(*PAIR, beta=0.25).item() == pytest.approx(1.0)
    assert ipo_loss(*PAIR, beta=0.5).item() == pytest.approx(0.0)
    assert ipo_loss(*PAIR, beta=1.0).item() == pytest.approx(0.25)


def test_conservative_dpo_loss_hand_computed():
    # 0.9 * log(1 + e^-0.5) + 0.1 * log(1 + e^0.5) = 0.9 * 0.474077 + 0.1 * 0.974077 = 0.524077
    loss = conservative_dpo_loss(*PAIR, beta=0.5, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.524077, abs=1e-6)
    # eps = 0 is plain DPO
    assert conservative_dpo_loss(*PAIR, beta=0.5, label_smoothing=0.0).item() == pytest.approx(
        dpo_loss(*PAIR, beta=0.5).item())


# TRL 1.16's DPOTrainer losses, written out from trl/trainer/dpo_trainer.py (TRL is not a dependency).
# delta = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)), summed over each answer's tokens.
def trl_ipo(chosen, rejected, ref_chosen, ref_rejected, beta, chosen_tokens, rejected_tokens):
    """TRL's "ipo": each answer's log-ratio divided by its token count, then (delta - 1/(2 beta))^2."""
    delta = (chosen - ref_chosen) / chosen_tokens - (rejected - ref_rejected) / rejected_tokens
    return (delta - 1 / (2 * beta)) ** 2


def trl_robust(chosen, rejected, ref_chosen, ref_rejected, beta, eps):
    """TRL's "robust" (Chowdhury et al. 2024): ((1 - eps) L(delta) - eps L(-delta)) / (1 - 2 eps)."""
    delta = (chosen - ref_chosen) - (rejected - ref_rejected)
    clean = -(1 - eps) * torch.nn.functional.logsigmoid(beta * delta)
    flipped = -eps * torch.nn.functional.logsigmoid(-beta * delta)
    return (clean - flipped) / (1 - 2 * eps)


LONG_PAIRS = [torch.tensor([-4.0, -9.0, -2.5]), torch.tensor([-7.0, -3.0, -6.0]),
              torch.tensor([-5.0, -8.0, -2.0]), torch.tensor([-6.5, -4.0, -5.0])]


def test_ipo_is_trls_ipo_on_log_probs_divided_by_answer_length():
    lengths_w, lengths_l = torch.tensor([9.0, 13.0, 9.0]), torch.tensor([9.0, 9.0, 13.0])
    theirs = trl_ipo(*LONG_PAIRS, 0.1, lengths_w, lengths_l)
    # the paper's eq. 17 on sequence log-probs, as minirlhf computes it, is another number ...
    assert not torch.allclose(ipo_loss(*LONG_PAIRS, beta=0.1), theirs)
    # ... and TRL's length-normalised IPO is minirlhf's on per-token log-probs
    per_token = [LONG_PAIRS[0] / lengths_w, LONG_PAIRS[1] / lengths_l,
                 LONG_PAIRS[2] / lengths_w, LONG_PAIRS[3] / lengths_l]
    torch.testing.assert_close(ipo_loss(*per_token, beta=0.1), theirs)
    # one-token answers: the two agree
    ones = torch.ones(3)
    torch.testing.assert_close(ipo_loss(*LONG_PAIRS, beta=0.1), trl_ipo(*LONG_PAIRS, 0.1, ones, ones))


def test_conservative_dpo_is_not_trls_robust_loss_and_says_how():
    eps, beta = 0.2, 0.5
    ours = conservative_dpo_loss(*LONG_PAIRS, beta=beta, label_smoothing=eps)
    theirs = trl_robust(*LONG_PAIRS, beta, eps)
    assert (ours - theirs).abs().min() > 1e-3  # different numbers
    flipped = [LONG_PAIRS[1], LONG_PAIRS[0], LONG_PAIRS[3], LONG_PAIRS[2]]
    # conservative DPO is the expected DPO loss when each label is flipped with probability eps ...
    torch.testing.assert_close(ours, (1 - eps) * dpo_loss(*LONG_PAIRS, beta=beta)
                               + eps * dpo_loss(*flipped, beta=beta))
    # ... TRL's robust loss is the unbiased estimate of the *clean* loss from flipped labels:
    # averaged over the flip, it gives back plain DPO on the true label
    torch.testing.assert_close((1 - eps) * theirs + eps * trl_robust(*flipped, beta, eps),
                               dpo_loss(*LONG_PAIRS, beta=beta))
    # with eps = 0 all three are plain DPO
    torch.testing.assert_close(trl_robust(*LONG_PAIRS, beta, 0.0), dpo_loss(*LONG_PAIRS, beta=beta))


def test_an_empty_sampled_answer_is_a_pair_dpo_learns_from(base):
    model, tokenizer = base
    prompt = world.make_prompt("France")
    data = Dataset.from_list([{"prompt": prompt, "chosen": world.make_response("France", "correct"),
                               "rejected": ""}] * 4)  # the model said EOS first: malformed, rated down
    policy = copy.deepcopy(model)
    _, history = train_dpo(policy, model, tokenizer, data, DPOConfig(epochs=2, batch_size=4, progress=False))
    empty = response_logprobs(policy, tokenizer, [prompt], [""]).item()
    assert empty < response_logprobs(model, tokenizer, [prompt], [""]).item()  # pushed down


def test_implicit_reward_hand_computed():
    reward = implicit_reward(torch.tensor([-1.0, -4.0]), torch.tensor([-1.5, -2.0]), 0.1)
    assert reward.tolist() == pytest.approx([0.05, -0.2])


def test_gradient_raises_chosen_and_lowers_rejected_log_ratio():
    chosen = torch.tensor([-2.0, -1.0], requires_grad=True)
    rejected = torch.tensor([-3.0, -0.5], requires_grad=True)
    ref_chosen, ref_rejected = torch.tensor([-2.5, -1.0]), torch.tensor([-2.0, -0.7])
    for loss_fn in (lambda *a: dpo_loss(*a, beta=0.1), lambda *a: ipo_loss(*a, beta=0.1),
                    lambda *a: conservative_dpo_loss(*a, beta=0.1, label_smoothing=0.2)):
        chosen.grad = rejected.grad = None
        loss_fn(chosen, rejected, ref_chosen, ref_rejected).sum().backward()
        # gradient descent moves against the gradient: chosen up, rejected down
        assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
        assert torch.allclose(chosen.grad, -rejected.grad)  # only the margin matters


def test_dpo_gradient_is_beta_times_sigmoid_of_minus_margin():
    # d/dh [-log sigmoid(beta h)] = -beta * sigmoid(-beta h); at h = 1, beta = 0.5: -0.5 * sigmoid(-0.5)
    chosen = PAIR[0].clone().requires_grad_()
    dpo_loss(chosen, PAIR[1], PAIR[2], PAIR[3], beta=0.5).sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.5 / (1 + math.exp(0.5)))


def test_losses_refuse_bad_beta_and_label_smoothing():
    for bad in (0, -0.1, float("nan"), float("inf")):
        for fn in (dpo_loss, ipo_loss):
            with pytest.raises(ValueError, match="beta"):
                fn(*PAIR, beta=bad)
        with pytest.raises(ValueError, match="beta"):
            implicit_reward(PAIR[0], PAIR[2], bad)
    with pytest.raises(ValueError, match="label_smoothing"):
        conservative_dpo_loss(*PAIR, beta=0.1, label_smoothing=0.5)


def test_metrics_on_a_known_batch():
    # beta = 0.5; implicit rewards: chosen 0.5 * [1, -1] = [0.5, -0.5], rejected 0.5 * [-1, 0] = [-0.5, 0]
    chosen, rejected = torch.tensor([-1.0, -3.0]), torch.tensor([-4.0, -2.0])
    _, chosen_rewards, rejected_rewards = preference_loss(chosen, rejected, torch.tensor([-2.0, -2.0]),
                                                          torch.tensor([-3.0, -2.0]), beta=0.5)
    metrics = dpo_metrics(chosen_rewards, rejected_rewards, chosen, rejected)
    assert metrics["rewards/chosen"] == pytest.approx(0.0)
    assert metrics["rewards/rejected"] == pytest.approx(-0.25)
    assert metrics["rewards/margins"] == pytest.approx(0.25)  # margins [1.0, -0.5]
    assert metrics["rewards/accuracies"] == pytest.approx(0.5)
    assert metrics["logps/chosen"] == pytest.approx(-2.0)
    assert metrics["logps/rejected"] == pytest.approx(-3.0)


# ------------------------------------------------------------------------------------------
# Batching, data checks, trainer
# ------------------------------------------------------------------------------------------

def clean_pairs(countries=("France", "Germany", "Italy", "Spain")) -> Dataset:
    """Correct answer chosen, a wrong city rejected, plus a hedge rejected: noise-free pairs."""
    rows = []
    for country in countries:
        prompt = world.make_prompt(country)
        correct = world.make_response(country, "correct")
        wrong = world.make_response(country, "wrong", "Tokyo" if country != "Japan" else "Rome")
        rows.append({"prompt": prompt, "chosen": correct, "rejected": wrong})
        rows.append({"prompt": prompt, "chosen": correct, "rejected": world.make_response(country, "hedge")})
    return Dataset.from_list(rows)


def test_packing_padding_and_batching_do_not_change_log_probs(base):
    model, tok = base
    data = clean_pairs()
    encoded = encode_pairs(tok, data)  # one row per pair: prompt, chosen, rejected, padding
    chosen, rejected = pair_logps(model, encoded)
    # each answer scores exactly as its own (prompt, answer) sequence does, alone and unpadded:
    # the rejected answer neither sees the chosen one nor gets its positions shifted by it
    alone = response_logprobs(model, tok, list(data["prompt"]), list(data["chosen"]), batch_size=1)
    assert torch.allclose(chosen.detach(), alone, atol=1e-5)
    alone = response_logprobs(model, tok, list(data["prompt"]), list(data["rejected"]), batch_size=1)
    assert torch.allclose(rejected.detach(), alone, atol=1e-5)
    # a sub-batch of the padded encoding (extra padding columns) gives the same numbers
    idx = torch.tensor([1, 3])
    sub_chosen, sub_rejected = pair_logps(model, {k: v[idx] for k, v in encoded.items()})
    assert torch.allclose(sub_chosen.detach(), chosen[idx].detach(), atol=1e-5)
    assert torch.allclose(sub_rejected.detach(), rejected[idx].detach(), atol=1e-5)
    # the reference pass, in small chunks, agrees too
    ref_chosen, ref_rejected = reference_logps(model, encoded, batch_size=3)
    assert torch.allclose(ref_chosen, chosen.detach(), atol=1e-5)
    assert torch.allclose(ref_rejected, rejected.detach(), atol=1e-5)


def test_packed_row_layout_and_mask(base):
    _, tok = base
    prompt, chosen, rejected = "Q: What is the capital of France? A:", "Paris.", "Berlin."
    row = {k: v[0] for k, v in encode_pairs(tok, Dataset.from_list(
        [{"prompt": prompt, "chosen": chosen, "rejected": rejected}])).items()}
    P = len(tok(prompt, add_special_tokens=False)["input_ids"])
    C = len(tok(chosen, add_special_tokens=False)["input_ids"]) + 1  # + EOS
    R = len(tok(rejected, add_special_tokens=False)["input_ids"]) + 1
    assert row["segment"].tolist() == [PROMPT] * P + [CHOSEN] * C + [REJECTED] * R
    assert row["position_ids"].tolist() == list(range(P + C)) + list(range(P, P + R))
    assert row["predicted_from"][P + C].item() == P - 1  # first rejected token follows the prompt
    assert row["predicted_from"][P + C + 1].item() == P + C  # then its own previous token
    visible = pair_attention_mask(row["segment"][None], torch.float32)[0, 0] == 0  # (T, T)
    assert not visible[P + C:, P:P + C].any()  # rejected never sees chosen
    assert visible[P + C:, :P].all() and visible[P:P + C, :P].all()  # both see the whole prompt
    assert not visible[:P, P:].any()  # the prompt sees nothing after it


def test_pair_longer_than_the_context_is_refused(base):
    model, tok = base
    long_prompt = " ".join([world.make_prompt("France")] * 6)  # 66 tokens, the context holds 64
    data = Dataset.from_list([{"prompt": long_prompt, "chosen": "Paris.", "rejected": "Berlin."}])
    with pytest.raises(ValueError, match="context holds 64"):
        pair_logps(model, encode_pairs(tok, data))


def test_attention_without_custom_masks_is_refused(base):
    model, tok = base
    flash = copy.deepcopy(model)
    flash.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        pair_logps(flash, encode_pairs(tok, clean_pairs(("France",))))


def test_bad_input_is_refused_with_a_clear_message(base):
    model, tok = base
    good = clean_pairs(("France",))
    row = {"prompt": world.make_prompt("France"), "chosen": world.make_response("France", "correct")}
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0)
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=-0.1)
    with pytest.raises(ValueError, match="rejected"):
        check_preference_data(Dataset.from_list([row]))  # missing column
    with pytest.raises(ValueError, match="same text"):
        check_preference_data(Dataset.from_list([{**row, "rejected": row["chosen"]}]))
    with pytest.raises(ValueError, match="empty"):
        check_preference_data(Dataset.from_list([{**row, "rejected": "  "}]))
    with pytest.raises(ValueError, match="datasets.Dataset"):
        check_preference_data([row])
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="hinge")
    with pytest.raises(ValueError, match="same text"):  # the trainer checks before doing anything
        train_dpo(copy.deepcopy(model), model, tok, Dataset.from_list([{**row, "rejected": row["chosen"]}]),
                  DPOConfig(progress=False))
    check_preference_data(good)  # and good data pass


def test_short_offline_run_raises_accuracy_and_lowers_loss(base):
    model, tok = base
    data = clean_pairs()
    config = DPOConfig(beta=0.1, learning_rate=1e-3, epochs=10, batch_size=4, warmup_steps=2,
                       log_every=1, rpo_alpha=0.0, progress=False)  # plain DPO: the loss starts at log 2
    policy, history = train_dpo(copy.deepcopy(model), model, tok, data, config)
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=0.02)  # policy = reference at first
    assert history[-1]["loss"] < 0.6
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert key in history[-1]
    # the trained policy ranks every pair correctly; the reference (margin 0) ranks none
    encoded = encode_pairs(tok, data)
    with torch.no_grad():
        chosen, rejected = pair_logps(policy, encoded)
    ref_chosen, ref_rejected = reference_logps(model, encoded)
    _, chosen_rewards, rejected_rewards = preference_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.1)
    metrics = dpo_metrics(chosen_rewards, rejected_rewards, chosen, rejected)
    assert metrics["rewards/accuracies"] == 1.0 and metrics["rewards/margins"] > 0


def test_first_block_is_kept_by_default_and_trained_with_frozen_blocks_zero(base):
    model, tok = base
    config = DPOConfig(beta=0.1, learning_rate=1e-3, epochs=2, batch_size=4,
                       progress=False)
    assert config.frozen_blocks == 1
    policy, _ = train_dpo(copy.deepcopy(model), model, tok, clean_pairs(), config)
    def first(m):
        return m.transformer.h[0].mlp.c_fc.weight

    def last(m):
        return m.transformer.h[-1].mlp.c_fc.weight

    assert torch.equal(first(policy), first(model)) and not torch.equal(last(policy), last(model))
    assert all(p.requires_grad for p in policy.parameters())  # the block is given back trainable
    policy, _ = train_dpo(copy.deepcopy(model), model, tok, clean_pairs(),
                          dataclasses.replace(config, frozen_blocks=0))
    assert not torch.equal(first(policy), first(model))
    with pytest.raises(ValueError, match="frozen_blocks must be an integer"):
        DPOConfig(frozen_blocks=-1)
    with pytest.raises(ValueError, match="frozen_blocks must be between"):
        train_dpo(copy.deepcopy(model), model, tok, clean_pairs(),
                  dataclasses.replace(config, frozen_blocks=3))


def test_embedding_lr_scale_zero_freezes_the_token_embeddings_only(base):
    model, tok = base
    config = DPOConfig(beta=0.1, learning_rate=1e-3, epochs=2, batch_size=4,
                       embedding_lr_scale=0.0, progress=False)
    policy, _ = train_dpo(copy.deepcopy(model), model, tok, clean_pairs(), config)
    # the embedding matrix (GPT-2's output layer too) stays put; the transformer blocks move
    assert torch.equal(policy.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert not torch.equal(policy.transformer.h[-1].mlp.c_fc.weight, model.transformer.h[-1].mlp.c_fc.weight)
    with pytest.raises(ValueError, match="embedding_lr_scale must be"):
        DPOConfig(embedding_lr_scale=-0.5)


def test_online_dpo_asks_its_rater_and_counts_the_labels(base):
    from minirlhf.optimum import ExactEvaluator

    model, tok = base
    prompts = [world.make_prompt(c) for c in ("France", "Japan")]
    evaluator = ExactEvaluator(model, tok, prompts)
    config = OnlineDPOConfig(beta=0.5, rounds=2, pairs_per_prompt=4, batch_size=8, eval_every=1,
                             progress=False)
    with pytest.raises(ValueError, match="pass rater="):  # no silent rater: every label is a cost
        train_online_dpo(copy.deepcopy(model), model, tok, prompts, None, config)
    held_out = ExactEvaluator(model, tok, [world.make_prompt("Cuba")])
    _, history = train_online_dpo(copy.deepcopy(model), model, tok, prompts, world.SimulatedRater(seed=0),
                                  config, evaluate=exact_metrics(evaluator, config.beta, held_out=held_out))
    assert history[0]["exact/attainment"] == pytest.approx(0.0, abs=1e-6)  # step 0: the reference
    assert [h["round"] for h in history] == [0, 1, 2]
    # the rater labelled every fresh pair (at most 2 prompts x 4 pairs a round), and nothing else
    labels = [h["rater_labels"] for h in history]
    assert labels[0] == 0 and 0 < labels[1] <= labels[2] <= 16
    for key in ("exact/attainment", "exact/coverage", "exact/true_reward", "exact_held_out/attainment",
                "loss"):
        assert key in history[-1]


def test_offline_dpo_early_stopping_goes_back_to_the_best_epoch(base):
    model, tok = base
    data = clean_pairs(("France", "Japan"))
    config = DPOConfig(beta=0.1, learning_rate=3e-2, epochs=6, batch_size=4, rpo_alpha=0.0, progress=False)
    # held-out pairs that say the opposite: their loss rises as training goes, so epoch 1 is the best
    flipped = data.rename_columns({"chosen": "rejected", "rejected": "chosen"})
    policy, history = train_dpo(copy.deepcopy(model), model, tok, data, config, eval_data=flipped)
    losses = [h["eval/loss"] for h in history if "eval/loss" in h]
    assert len(losses) == 6 and history[-1]["best_epoch"] == 1 + losses.index(min(losses)) < 6


def test_rpo_adds_the_chosen_answers_nll_per_token():
    # two chosen answers of 4 and 6 tokens with summed log-probs -2 and -4: NLL = 6 / 10 per token
    assert nll_per_token(torch.tensor([-2.0, -4.0]), torch.tensor([4, 6])).item() == pytest.approx(0.6)
    logps = torch.tensor([-2.0, -4.0], requires_grad=True)
    nll_per_token(logps, torch.tensor([4, 6])).backward()
    assert logps.grad.tolist() == pytest.approx([-0.1, -0.1])  # every token counts the same

