"""Tokenizer round trip, the tiny GPT, save/load, and mismatches refused."""

import pytest
import torch

from minirlhf import world
from minirlhf.models import build_tiny_gpt, check_tokenizer_matches
from minirlhf.saved_models import load_model, save_model
from minirlhf.tokenizer import build_tokenizer, decode


def test_round_trip_of_every_world_text():
    tokenizer = build_tokenizer()
    texts = [world.make_prompt("France")] + world.candidate_responses(world.make_prompt("Japan"))
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert decode(tokenizer, ids) == text


def test_pad_and_eos_are_separate_and_skipped_when_decoding():
    tokenizer = build_tokenizer()
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = tokenizer("Paris.", add_special_tokens=False)["input_ids"]
    assert decode(tokenizer, ids + [tokenizer.eos_token_id, tokenizer.pad_token_id]) == "Paris."


def test_save_and_load_round_trip_in_safetensors(tmp_path):
    model, tokenizer = build_tiny_gpt(seed=3)
    save_model(model, tokenizer, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list((tmp_path / "ckpt").glob("*.bin"))
    loaded, loaded_tok = load_model(tmp_path / "ckpt")
    ids = torch.tensor([tokenizer("Q: What is the capital of France? A:")["input_ids"]])
    assert torch.equal(model.eval()(ids).logits, loaded.eval()(ids).logits)
    assert loaded_tok.get_vocab() == tokenizer.get_vocab()


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="minirlhf sft --out"):
        load_model(tmp_path / "nowhere")


def test_tokenizer_model_mismatch_is_refused():
    model, _ = build_tiny_gpt()
    bigger = build_tokenizer(world.all_words() + [f"extra{i}" for i in range(20)])
    with pytest.raises(ValueError, match="do not belong together"):
        check_tokenizer_matches(model, bigger)


def test_tiny_gpt_size():
    model, _ = build_tiny_gpt()
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < n_params < 200_000


def test_clip_grad_norm_over_the_optimizers_groups_matches_torch_on_the_model():
    """The trainers clip over the optimizer's parameter lists (cheaper than model.parameters());
    with the embedding/rest groups the result is bitwise torch's clipping over the whole model."""
    from minirlhf.training import embedding_param_groups
    from minirlhf.training import clip_grad_norm

    model, tokenizer = build_tiny_gpt(seed=0)
    ids = torch.tensor([tokenizer("Q: What is the capital of France? A:")["input_ids"]])
    model(ids, labels=ids).loss.mul(100).backward()  # large gradients: clipping is active
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(embedding_param_groups(model, 1e-3, 0.1))
    norm = clip_grad_norm(optimizer, 0.5)
    clipped = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    assert norm.item() > 0.5  # it did clip
    assert torch.equal(norm, expected_norm)
    for n, p in model.named_parameters():
        assert torch.equal(clipped[n], p.grad), n
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in clipped.values()]))
    assert total.item() == pytest.approx(0.5, rel=1e-4)
