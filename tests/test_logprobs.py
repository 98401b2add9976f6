"""The shared log-prob helper: masking, left padding, batching, generation, bad input."""

import pytest
import torch

from minirlhf import world
from minirlhf.logprobs import (
    encode_prompt_response,
    position_ids_from_mask,
    response_logprobs,
    sequence_logprobs,
    token_logprobs,
)
from minirlhf.sampling import generate

FRANCE = world.make_prompt("France")
PARIS = "The capital of France is Paris."


def test_layout_masks(tiny):
    _, tokenizer = tiny
    batch = encode_prompt_response(tokenizer, [FRANCE, "Q: A:"], [PARIS, "Paris."])
    ids, attention, response = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    n_prompt, n_response = 11, 7 + 1  # words + punctuation; the response gets an EOS
    assert ids.shape == (2, n_prompt + n_response)
    assert response[0].tolist() == [0] * n_prompt + [1] * n_response
    assert ids[0, -1] == tokenizer.eos_token_id
    # second row: prompt "Q : A :" left-padded, response "Paris . <eos>" then right padding
    assert attention[1].tolist() == [0] * 7 + [1] * 4 + [1] * 3 + [0] * 5
    assert response[1].tolist() == [0] * 11 + [1] * 3 + [0] * 5
    assert position_ids_from_mask(attention)[1, 7:11].tolist() == [0, 1, 2, 3]


def test_sequence_logprob_is_the_sum_over_response_tokens_only(tiny):
    model, tokenizer = tiny
    batch = encode_prompt_response(tokenizer, [FRANCE], [PARIS])
    per_token = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    expected = per_token[0, 11:].sum()  # the 8 response positions, EOS included
    assert sequence_logprobs(model, batch)[0].item() == pytest.approx(expected.item())


def test_left_padding_and_batching_do_not_change_log_probs(tiny):
    model, tokenizer = tiny
    alone = response_logprobs(model, tokenizer, [FRANCE], [PARIS])
    # in a batch with a much shorter prompt and a longer response, the France row is padded
    batched = response_logprobs(model, tokenizer, ["Q: A:", FRANCE, FRANCE],
                                ["There are several capitals, but Paris is the official capital.",
                                 PARIS, "Paris."])
    assert batched[1].item() == pytest.approx(alone[0].item(), abs=1e-5)
    # without position ids from the mask, left padding would shift GPT-2's positions
    batch = encode_prompt_response(tokenizer, ["Q: A:", FRANCE], [PARIS, PARIS])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    naive = torch.log_softmax(logits[0, :-1], -1).gather(-1, batch["input_ids"][0, 1:, None])
    naive = (naive.squeeze(-1) * batch["response_mask"][0, 1:]).sum()
    correct = response_logprobs(model, tokenizer, ["Q: A:"], [PARIS])[0]
    assert abs(naive.item() - correct.item()) > 1e-3


def test_repeated_texts_encode_like_one_by_one(tiny):
    """Each distinct text is tokenised once; the rows must not notice (nor share their lists)."""
    _, tokenizer = tiny
    japan, tokyo = world.make_prompt("Japan"), "The capital of Japan is Tokyo."
    prompts, responses = [FRANCE, japan, FRANCE, FRANCE], [PARIS, tokyo, PARIS, "Berlin."]
    batch = encode_prompt_response(tokenizer, prompts, responses)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        alone = encode_prompt_response(tokenizer, [prompt], [response])
        real = batch["attention_mask"][i].bool()
        assert batch["input_ids"][i][real].tolist() == alone["input_ids"][0].tolist()
    assert batch["input_ids"][0].tolist() == batch["input_ids"][2].tolist()
    with pytest.raises(ValueError, match="does not know"):
        encode_prompt_response(tokenizer, [FRANCE, FRANCE], [PARIS, "Paris is lovely."])


def test_rollout_log_probs_equal_teacher_forced_log_probs(tiny):
    model, tokenizer = tiny
    rollout = generate(model, tokenizer, [FRANCE, "Q: A:"], max_new_tokens=6,
                       generator=torch.Generator().manual_seed(0))
    from_rollout = sequence_logprobs(model, rollout)
    for i in range(2):
        alone = rollout["input_ids"][i][rollout["attention_mask"][i].bool()]
        mask = rollout["response_mask"][i][rollout["attention_mask"][i].bool()]
        lp = token_logprobs(model, alone[None], torch.ones_like(alone)[None])
        assert from_rollout[i].item() == pytest.approx((lp[0] * mask).sum().item(), abs=1e-5)


def test_generation_is_seeded_and_stops_at_eos(base):
    model, tokenizer = base
    first = generate(model, tokenizer, [FRANCE] * 8, generator=torch.Generator().manual_seed(1))
    again = generate(model, tokenizer, [FRANCE] * 8, generator=torch.Generator().manual_seed(1))
    assert first["responses"] == again["responses"]
    assert first["finished"].all()
    last_real = first["attention_mask"].sum(-1) - 1
    eos_positions = (first["input_ids"] == tokenizer.eos_token_id).float().argmax(-1)
    assert torch.equal(eos_positions, last_real)  # nothing real after the EOS


def test_bad_input_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="prompt is empty"):
        response_logprobs(model, tokenizer, [""], [PARIS])
    with pytest.raises(ValueError, match="context holds 64"):
        response_logprobs(model, tokenizer, [" ".join([FRANCE] * 7)], [PARIS])
    with pytest.raises(ValueError, match="does not know"):
        response_logprobs(model, tokenizer, [FRANCE], ["The capital is Gotham."])
    with pytest.raises(ValueError, match="batch is empty"):
        encode_prompt_response(tokenizer, [], [])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tokenizer, [FRANCE], max_new_tokens=60)
