"""The examples' ``--model`` path on a sub-word checkpoint, offline: a tiny randomly initialised Qwen2
(a current architecture, built here with ``transformers``) and a byte-level BPE tokenizer trained here
with ``tokenizers`` on the toy world's text, saved as a checkpoint folder as a hub model would be.

What it checks: the tokenizer is really sub-word (``"The"`` and ``" The"`` differ, so the leading space
of TRL's data matters); the exact evaluation (:class:`AnswerEvaluator`) scores each answer as the tokens
of the whole text ``prompt + " " + answer``, which TRL trains on; both examples train the checkpoint and
report the exact figures; and ``--model`` without ``--learning-rate`` is refused with the advice that a
real checkpoint wants a far smaller rate than the tiny GPT's. (Whether that advice fits a real
pretrained checkpoint needs one, and a download: not tested here.)"""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from minirlhf import world
from minirlhf.export import answer_text
from minirlhf.integrations.trl import AnswerEvaluator

trl = pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[1]
EOS, PAD = "<|endoftext|>", "<|pad|>"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _texts() -> list[str]:
    """Every prompt and candidate answer of the world, as TRL's data join them."""
    return [p + answer_text(y) for p in world.prompts("all") for y in world.candidate_responses(p)]


def _pretrain(model, tokenizer, steps: int = 40) -> None:
    """A few steps of language modelling on the SFT corpus, as TRL's data spell it. A random model
    gives each token about 1/400, so that the longest answers' probabilities (about 30 tokens) underflow
    to 0 in float32 and the exact figures become infinite; a few steps lift them. The mass on the
    candidate set stays small: this checks the path, not what the model learns."""
    from minirlhf.export import sft_data

    data = sft_data()
    texts = [p + c + EOS for p, c in zip(data["prompt"], data["completion"])]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(texts), (64,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A folder holding a tiny Qwen2 and a byte-level BPE tokenizer, both built here (the model
    randomly initialised, then briefly trained on the toy corpus)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(_texts(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=PAD)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # beside other busy processes, two threads on two cores crawl
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    _pretrain(model, tokenizer)
    torch.set_num_threads(threads)
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def threads():
    """The examples set torch's threads (--threads): give the test session its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_tokenizer_is_sub_word_and_a_spaced_answer_is_spelled_as_in_the_whole_text(checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    words = set(" ".join(_texts()).replace(".", " ").replace("?", " ").replace(",", " ").split())
    assert any(len(ids(" " + word)) > 1 for word in words)  # not one token per word: pieces
    assert ids("The") != ids(" The")  # the space is part of the token: answers must keep it
    for prompt in world.prompts("all"):
        for answer in world.candidate_responses(prompt):
            assert ids(prompt) + ids(answer_text(answer)) == ids(prompt + answer_text(answer)), answer


def test_the_exact_evaluation_scores_the_tokens_of_the_whole_text(checkpoint):
    """AnswerEvaluator's probability of an answer is the model's teacher-forced probability of the
    answer's tokens (and EOS) within ``prompt + " " + answer``: the sequence TRL trains on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompt = world.make_prompt("France")
    evaluator = AnswerEvaluator(model, tokenizer, [prompt])
    for k in (0, 5):
        answer = answer_text(evaluator.candidates[0][k])
        whole = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = model(torch.tensor([whole])).logits.log_softmax(-1)[0]
        expected = sum(logp[t - 1, whole[t]].item() for t in range(start, len(whole)))
        assert math.log(evaluator.ref_set_probs[0, k].item()) == pytest.approx(expected, abs=1e-4)


def test_both_examples_train_a_sub_word_checkpoint_and_report_its_exact_figures(checkpoint, tmp_path,
                                                                                 threads):
    dpo = _example("trl_dpo").main(["--model", str(checkpoint), "--learning-rate", "1e-3", "--max-steps", "2",
                                    "--eval-every", "0", "--out", str(tmp_path / "dpo")])
    grpo = _example("trl_grpo").main(["--model", str(checkpoint), "--learning-rate", "1e-3", "--steps", "1",
                                      "--eval-every", "0", "--out", str(tmp_path / "grpo")])
    assert dpo["step"] == 2 and grpo["step"] == 8  # 1 batch x epochs 4 x minibatches 2
    for final in (dpo, grpo):  # the exact figures of a sub-word model, scored as the tokens of the text
        assert all(math.isfinite(value) for value in final.values())
        assert 0 < final["exact/coverage"] <= 1 and 0 < final["exact_held_out/coverage"] <= 1


@pytest.mark.parametrize("example", ["trl_dpo", "trl_grpo"])
def test_a_checkpoint_without_a_learning_rate_is_refused_with_the_advice(example, checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_:
        _example(example).main(["--model", str(checkpoint)])
    assert exit_.value.code == 2
    assert "--model needs --learning-rate" in capsys.readouterr().err
