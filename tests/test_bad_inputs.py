"""The catalogue of bad inputs and interruptions (issue 19): each is refused with a message that says
what to fix, and no file the user had is lost (files are compared byte for byte before and after).

Interruptions are simulated by making ``os.replace`` or a save function raise midway; a hard kill
is simulated by leaving on disk what it would leave. Tiny models and few steps keep this fast.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from minirlhf import cli, pipeline, world
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.sampling import generate
from minirlhf.models import build_tiny_gpt
from minirlhf.saved_models import BASE_MODEL_DIR, load_model, save_model
from minirlhf.ppo import PPOConfig, train_ppo
from minirlhf.preferences import check_preference_data, load_preferences
from minirlhf.reward import RewardConfig, RewardModel, load_reward_model, train_reward_model
from minirlhf.sft import SFTConfig
from minirlhf.tokenizer import build_tokenizer
from minirlhf.checkpoint_files import CHECKPOINT_INFO

FRANCE = world.make_prompt("France")
PARIS = world.make_response("France", "correct")
BERLIN = world.make_response("France", "wrong", "Berlin")
ONE_STEP = RewardConfig(steps=1, progress=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_files(folder: Path) -> dict[str, bytes]:
    """Put two files of "the user" into ``folder``; return the snapshot to compare with later."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "config.json").write_text('{"mine": true}')
    return snapshot(folder)


def assert_kept(before: dict[str, bytes], folder: Path) -> None:
    """Each file of ``before`` is still in ``folder`` with the same bytes."""
    after = snapshot(folder)
    for name, content in before.items():
        assert after.get(name) == content, f"{name} was lost or changed"


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A saved tiny GPT (seed 1) and the snapshot of its files."""
    model, tokenizer = build_tiny_gpt(seed=1)
    path = save_model(model, tokenizer, tmp_path / "ckpt")
    return path, snapshot(path)


def never(*args, **kwargs):
    raise AssertionError("training started although the input was bad")


# ---------------------------------------------------------------------------------------------
# 1. Saving never deletes what minirlhf did not write
# ---------------------------------------------------------------------------------------------

def test_save_model_refuses_a_folder_with_the_users_files(tmp_path):
    before = user_files(tmp_path / "mine")
    with pytest.raises(FileExistsError, match="minirlhf did not write.*notes.txt.*new or empty folder"):
        save_model(*build_tiny_gpt(), tmp_path / "mine")
    assert_kept(before, tmp_path / "mine")


def test_save_model_refuses_an_existing_file(tmp_path):
    (tmp_path / "model").write_text("a file of mine")
    with pytest.raises(FileExistsError, match="is a file.*choose another folder"):
        save_model(*build_tiny_gpt(), tmp_path / "model")
    assert (tmp_path / "model").read_text() == "a file of mine"
    assert not list(tmp_path.glob(".model*")), "nothing hidden is left beside it"


def test_save_model_refuses_a_checkpoint_the_user_added_a_file_to(tiny_checkpoint):
    path, _ = tiny_checkpoint
    (path / "notes.txt").write_text("about this model")
    before = snapshot(path)
    with pytest.raises(FileExistsError, match="notes.txt"):
        save_model(*build_tiny_gpt(seed=2), path)
    assert snapshot(path) == before


def test_reward_model_save_refuses_a_folder_with_the_users_files(tmp_path):
    model, tokenizer = build_tiny_gpt()
    before = user_files(tmp_path / "mine")
    with pytest.raises(FileExistsError, match="minirlhf did not write"):
        RewardModel.from_base(model).save(tmp_path / "mine", tokenizer)
    assert_kept(before, tmp_path / "mine")


def test_cli_sft_refuses_a_folder_with_the_users_files_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "train_base_model", never)
    before = user_files(tmp_path / "mine")
    with pytest.raises(SystemExit):
        cli.main(["sft", "--out", str(tmp_path / "mine")])
    assert "minirlhf did not write" in capsys.readouterr().err
    assert_kept(before, tmp_path / "mine")


@pytest.mark.parametrize("out", [".", ".."])
def test_cli_sft_out_dot_says_to_name_a_subfolder(tmp_path, monkeypatch, capsys, out):
    monkeypatch.setattr(pipeline, "train_base_model", never)
    before = user_files(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(SystemExit):
        cli.main(["sft", "--out", out])
    err = capsys.readouterr().err
    assert "the folder you are in" in err and "subfolder" in err and "empty name" not in err
    assert_kept(before, tmp_path / "work")


def test_save_replaces_an_empty_folder_and_a_checkpoint_but_not_a_folder_without_its_record(tmp_path):
    model, tokenizer = build_tiny_gpt(seed=1)
    (tmp_path / "empty").mkdir()
    save_model(model, tokenizer, tmp_path / "empty")
    shipped = tmp_path / "shipped"
    shutil.copytree(BASE_MODEL_DIR, shipped)  # its record lists each file with its sha256
    save_model(model, tokenizer, shipped)
    assert json.loads((shipped / CHECKPOINT_INFO).read_text())["kind"] == "causal_lm"
    assert not (shipped / "sft_history.json").exists()  # a file of the old checkpoint, not the user's
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(BASE_MODEL_DIR, unrecorded)
    (unrecorded / CHECKPOINT_INFO).unlink()  # as transformers' save_pretrained leaves a folder
    before = snapshot(unrecorded)
    with pytest.raises(FileExistsError, match="minirlhf did not write.*config.json"):
        save_model(model, tokenizer, unrecorded)
    assert_kept(before, unrecorded)


def test_saved_files_are_readable_by_everyone(tiny_checkpoint):
    path, _ = tiny_checkpoint
    assert path.stat().st_mode & 0o777 == 0o755
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()}
    assert modes == dict.fromkeys(modes, 0o644)


# ---------------------------------------------------------------------------------------------
# 1. Interrupted saves leave the old or the new checkpoint, and no leftovers after the next save
# ---------------------------------------------------------------------------------------------

def _replace_failing(monkeypatch, when):
    """Make ``os.replace`` raise KeyboardInterrupt once, on the first call for which ``when(src, dst)``."""
    real, state = os.replace, {"done": False}

    def replace(src, dst, *args, **kwargs):
        if not state["done"] and when(Path(src), Path(dst)):
            state["done"] = True
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("stop", ["first rename", "second rename"])
def test_save_interrupted_at_a_rename_leaves_the_old_checkpoint(tiny_checkpoint, monkeypatch, stop):
    path, before = tiny_checkpoint
    if stop == "first rename":
        _replace_failing(monkeypatch, lambda src, dst: src == path)
    else:
        _replace_failing(monkeypatch, lambda src, dst: dst == path and src.name.startswith(".ckpt.tmp-"))
    with pytest.raises(KeyboardInterrupt):
        save_model(*build_tiny_gpt(seed=2), path)
    assert snapshot(path) == before
    load_model(path)


def test_save_interrupted_while_writing_leaves_the_old_checkpoint_and_no_temporary_folder(tiny_checkpoint,
                                                                                          monkeypatch):
    path, before = tiny_checkpoint
    model, tokenizer = build_tiny_gpt(seed=2)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(tokenizer), "save_pretrained", interrupted)  # after the weights are written
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tokenizer, path)
    assert snapshot(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]


def test_save_interrupted_while_deleting_the_old_one_leaves_the_new_one(tiny_checkpoint, monkeypatch):
    path, before = tiny_checkpoint
    model, tokenizer = build_tiny_gpt(seed=2)
    real = shutil.rmtree

    def rmtree(target, *args, **kwargs):
        if Path(target).name == ".ckpt.old":
            raise KeyboardInterrupt
        return real(target, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tokenizer, path)
    monkeypatch.undo()
    loaded, _ = load_model(path)
    assert torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight)
    save_model(model, tokenizer, path)  # the next save removes the leftover
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]


def test_a_save_killed_between_the_renames_is_recovered_by_the_next_load(tiny_checkpoint):
    """What a hard kill leaves: the old checkpoint in .ckpt.old, the new one in a temporary folder."""
    path, before = tiny_checkpoint
    os.replace(path, path.with_name(".ckpt.old"))
    shutil.copytree(path.with_name(".ckpt.old"), path.with_name(".ckpt.tmp-killed"))
    model, _ = load_model(path)
    assert snapshot(path) == before and not path.with_name(".ckpt.old").exists()
    save_model(model, build_tokenizer(), path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]


def test_a_reward_model_save_killed_between_the_renames_is_recovered_by_load(tmp_path):
    model, tokenizer = build_tiny_gpt()
    path = RewardModel.from_base(model).save(tmp_path / "rm", tokenizer)
    before = snapshot(path)
    os.replace(path, tmp_path / ".rm.old")
    load_reward_model(tmp_path / "rm")
    assert snapshot(path) == before


def test_the_next_save_cleans_up_only_its_own_leftovers(tiny_checkpoint):
    path, _ = tiny_checkpoint
    (path.parent / ".ckpt.tmp-abc123").mkdir()
    (path.parent / ".ckpt.tmp-abc123" / "model.safetensors").write_bytes(b"half")
    before = user_files(path.parent / "other")
    (path.parent / ".ckpt.swp").write_text("an editor's file")
    save_model(*build_tiny_gpt(seed=2), path)
    assert not (path.parent / ".ckpt.tmp-abc123").exists()
    assert (path.parent / ".ckpt.swp").read_text() == "an editor's file"
    assert_kept(before, path.parent / "other")


# ---------------------------------------------------------------------------------------------
# 2. An interrupted demo does not mix two runs; 7. an unwritable folder fails before training
# ---------------------------------------------------------------------------------------------

def test_demo_interrupted_marks_the_folder_and_leaves_no_old_report(tmp_path, monkeypatch):
    out = tmp_path / "out"
    earlier = pipeline.demo_folder(out).open()  # what an earlier demo wrote, with its record
    earlier.write_text("report.md", "# minirlhf demo report\nold run")
    earlier.write_text("metrics.json", "{}")
    earlier.write_bytes("sft_loss.png", b"old figure")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    sft = {"trained_steps": 0, "seconds": 0.0, "france": {"Paris": 0.3, "Berlin": 0.4, "hedge": 0.1}}
    monkeypatch.setattr(pipeline, "sft_stage", lambda outdir, seed, quick, retrain: sft)
    monkeypatch.setattr(pipeline, "reward_stage", stopped)
    with pytest.raises(KeyboardInterrupt):
        pipeline.demo(out, quick=True)
    assert "may mix two runs" in (out / "RUNNING").read_text()
    assert not (out / "report.md").exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize("command", ["sft", "demo"])
def test_an_unwritable_output_folder_fails_before_training(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setattr(pipeline, "train_base_model", never)
    monkeypatch.setattr(pipeline, "sft_stage", never)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real(p, mode, **kw))
    with pytest.raises(SystemExit):
        cli.main([command, "--out", str(tmp_path / "out")])
    assert "Cannot write into" in capsys.readouterr().err


def test_an_output_folder_below_a_file_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "sft_stage", never)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(SystemExit):
        cli.main(["demo", "--out", str(tmp_path / "file" / "out")])
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# 3. and 7. Loading refuses the wrong kind, a foreign tokenizer and damaged files, naming them
# ---------------------------------------------------------------------------------------------

def test_load_model_refuses_a_reward_model_checkpoint(tmp_path):
    model, tokenizer = build_tiny_gpt()
    path = RewardModel.from_base(model).save(tmp_path / "rm", tokenizer)
    with pytest.raises(ValueError, match="reward_model checkpoint.*load_reward_model"):
        load_model(path)
    (path / CHECKPOINT_INFO).unlink()  # without minirlhf's record, reward_model.json tells
    with pytest.raises(ValueError, match="reward_model checkpoint.*load_reward_model"):
        load_model(path)


def test_reward_model_load_refuses_a_causal_lm_checkpoint(tiny_checkpoint):
    with pytest.raises(ValueError, match="no reward model.*from_base"):
        RewardModel.load(tiny_checkpoint[0])


def _other_tokenizer(kind: str):
    words = world.all_words()
    return build_tokenizer(words[1:] + words[:1] if kind == "shifted" else words[:-3])


@pytest.mark.parametrize("kind", ["shifted", "shorter"])
def test_load_model_refuses_a_tokenizer_that_is_not_the_weights_one(tiny_checkpoint, tmp_path, kind):
    path, _ = tiny_checkpoint
    _other_tokenizer(kind).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "tokenizer.json", path / "tokenizer.json")
    with pytest.raises(ValueError, match=r"tokenizer in .*tokenizer.json \(fingerprint \w+\) is not the "
                                         r"one the weights were saved with \(fingerprint \w+, recorded in "
                                         r".*minirlhf.json\).*Put back"):
        load_model(path)


def test_reward_model_load_refuses_a_tokenizer_that_is_not_the_weights_one(tmp_path):
    model, tokenizer = build_tiny_gpt()
    path = RewardModel.from_base(model).save(tmp_path / "rm", tokenizer)
    _other_tokenizer("shifted").save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "tokenizer.json", path / "tokenizer.json")
    with pytest.raises(ValueError, match="is not the one the weights were saved with"):
        load_reward_model(path)


def test_the_shipped_checkpoint_loads_with_and_without_its_minirlhf_json(tmp_path):
    info = json.loads((BASE_MODEL_DIR / CHECKPOINT_INFO).read_text())
    assert info["kind"] == "causal_lm" and len(info["tokenizer_sha256"]) == 64
    load_model(BASE_MODEL_DIR)
    shutil.copytree(BASE_MODEL_DIR, tmp_path / "unrecorded")
    (tmp_path / "unrecorded" / CHECKPOINT_INFO).unlink()
    load_model(tmp_path / "unrecorded")


@pytest.mark.parametrize("loader", [load_model, load_reward_model])
def test_a_truncated_weights_file_is_named(tmp_path, loader):
    model, tokenizer = build_tiny_gpt()
    path = (save_model(model, tokenizer, tmp_path / "ckpt") if loader is load_model
            else RewardModel.from_base(model).save(tmp_path / "ckpt", tokenizer))
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model.safetensors .*damaged.*Copy the whole checkpoint"):
        loader(path)


@pytest.mark.parametrize("name", ["tokenizer.json", "model.safetensors"])
def test_a_missing_file_of_a_checkpoint_is_named(tiny_checkpoint, name):
    path, _ = tiny_checkpoint
    (path / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"has no {name}"):
        load_model(path)


def test_a_damaged_minirlhf_json_is_named(tiny_checkpoint):
    path, _ = tiny_checkpoint
    (path / CHECKPOINT_INFO).write_text("{not json")
    with pytest.raises(ValueError, match="minirlhf.json is damaged.*save the model again into a new folder"):
        load_model(path)
    before = snapshot(path)
    # a damaged record vouches for no file: the folder is the user's to clear
    with pytest.raises(FileExistsError, match="minirlhf did not write"):
        save_model(*build_tiny_gpt(seed=2), path)
    assert_kept(before, path)
    load_model(save_model(*build_tiny_gpt(seed=2), path.parent / "new"))


# ---------------------------------------------------------------------------------------------
# 4. and 6. Configs refuse wrong types and ranges when built
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, field, message", [
    (SFTConfig, {"steps": 0}, "steps must be an integer > 0"),
    (SFTConfig, {"log_every": 0}, "log_every must be an integer > 0"),
    (SFTConfig, {"steps": 2.5}, "steps must be an integer"),
    (SFTConfig, {"learning_rate": "3e-3"}, "learning_rate must be a finite number"),
    (SFTConfig, {"learning_rate": float("nan")}, "learning_rate must be a finite number"),
    (SFTConfig, {"progress": "no"}, "progress must be True or False"),
    (PPOConfig, {"adaptive_kl": "no"}, "adaptive_kl must be True or False"),
    (PPOConfig, {"steps": 2.5}, "steps must be an integer"),
    (PPOConfig, {"beta": "0.1"}, "beta must be a finite number"),
    (PPOConfig, {"learning_rate": float("inf")}, "learning_rate must be a finite number"),
    (DPOConfig, {"epochs": 1.5}, "epochs must be an integer"),
    (DPOConfig, {"beta": "0.1"}, "beta must be a finite number"),
    (RewardConfig, {"steps": "300"}, "steps must be an integer"),
    (RewardConfig, {"log_every": 0}, "log_every must be an integer > 0"),
])
def test_configs_refuse_wrong_types_and_ranges(config, field, message):
    with pytest.raises(ValueError, match=message):
        config(**field)


def test_cli_sft_steps_0_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "train_base_model", never)
    with pytest.raises(SystemExit):
        cli.main(["sft", "--out", str(tmp_path / "m"), "--steps", "0"])
    assert "steps must be an integer > 0, got 0" in capsys.readouterr().err


def test_demo_seed_reaches_every_stage(monkeypatch, tmp_path):
    seen = {}

    def record(name):
        def trainer(*args, **kwargs):
            config = next(a for a in list(args) + list(kwargs.values()) if hasattr(a, "seed"))
            seen[name] = (config.seed, kwargs["rater"].seed if "rater" in kwargs else None)
            raise KeyboardInterrupt
        return trainer

    for name in ("train_reward_model", "train_ppo", "train_dpo"):
        monkeypatch.setattr(pipeline, name, record(name))
    def pairs(*args, seed, **kwargs):
        seen["pairs"] = seed
        return Dataset.from_list([{"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN}] * 4)

    monkeypatch.setattr(pipeline, "collect_preferences", pairs)
    for stage in (lambda: pipeline.reward_stage(tmp_path, quick=True, seed=7),
                  lambda: pipeline.ppo_stage(tmp_path, None, None, quick=True, seed=7),
                  lambda: pipeline.dpo_stage(tmp_path, {"train": None}, quick=True, seed=7)):
        with pytest.raises(KeyboardInterrupt):
            stage()
    assert seen == {"pairs": 7, "train_reward_model": (7, None), "train_ppo": (7, 7), "train_dpo": (7, None)}


# ---------------------------------------------------------------------------------------------
# 5. and 6. Preference data: no pair differing only in spacing, no silent column overwrite
# ---------------------------------------------------------------------------------------------

SPACED = [{"prompt": FRANCE, "chosen": "The capital of France is Paris .", "rejected": PARIS}]


def test_load_preferences_refuses_a_pair_that_differs_only_in_spacing():
    with pytest.raises(ValueError, match="Row 0.*same text up to spacing.*Drop them"):
        load_preferences(SPACED)


@pytest.mark.parametrize("trainer", ["reward", "dpo"])
def test_training_refuses_a_pair_that_differs_only_in_spacing(trainer):
    model, tokenizer = build_tiny_gpt()
    data = Dataset.from_list([{"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN}] + SPACED)
    with pytest.raises(ValueError, match="Row 1.*same text up to spacing"):
        if trainer == "reward":
            train_reward_model(RewardModel.from_base(model), tokenizer, data, ONE_STEP)
        else:
            train_dpo(model, model, tokenizer, data, DPOConfig(progress=False))


def test_a_pair_that_is_the_same_tokens_is_refused_when_a_tokenizer_is_at_hand():
    tokenizer = build_tokenizer(world.all_words() + ["-"])
    data = Dataset.from_list([{"prompt": FRANCE, "chosen": PARIS + "-", "rejected": PARIS + " -"}])
    check_preference_data(data)  # as text they differ ("-" is not punctuation to normalise_text) ...
    with pytest.raises(ValueError, match="Row 0 of the training data.*same tokens.*Drop them"):
        check_preference_data(data, "training data", tokenizer)  # ... as tokens they do not


def test_load_preferences_refuses_to_overwrite_an_existing_column():
    rows = [{"prompt": FRANCE, "chosen": PARIS, "good": BERLIN, "rejected": BERLIN + " Paris"}]
    original = json.dumps(rows)
    with pytest.raises(ValueError, match=r"two columns named \['chosen'\].*columns=\{'chosen': 'chosen_old'"):
        load_preferences(rows, columns={"good": "chosen"})
    with pytest.raises(ValueError, match=r"two columns named \['rejected'\]"):
        load_preferences([{"q": FRANCE, "a": PARIS, "b": BERLIN}],
                         columns={"q": "prompt", "a": "rejected", "b": "rejected"})
    assert json.dumps(rows) == original  # the caller's rows are untouched


# ---------------------------------------------------------------------------------------------
# 7. Files of preference data: the file and line are named, a byte-order mark is fine
# ---------------------------------------------------------------------------------------------

def test_a_broken_jsonl_line_is_named_with_its_file_and_line(tmp_path):
    good = json.dumps({"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN})
    path = tmp_path / "prefs.jsonl"
    path.write_text(f"{good}\n\n{good[:-5]}\n{good}\n")
    with pytest.raises(ValueError, match=r"prefs.jsonl, line 3: not valid JSON.*Fix that line"):
        load_preferences(path)


def test_a_broken_json_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "prefs.json"
    path.write_text('[\n{"prompt": "a",\n "chosen": }\n]')
    with pytest.raises(ValueError, match=r"prefs.json, line 3: not valid JSON"):
        load_preferences(path)


def test_a_jsonl_row_that_is_not_an_object_is_named(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps([FRANCE, PARIS, BERLIN]) + "\n")
    with pytest.raises(ValueError, match="Row 0 is a list, not an object"):
        load_preferences(path)


def test_a_csv_with_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text(f'prompt,chosen,rejected\n"{FRANCE}","{PARIS}","{BERLIN}"\n', encoding="utf-8-sig")
    assert load_preferences(path).to_list() == [{"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN}]


def test_a_latin1_file_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_bytes(f'prompt,chosen,rejected\n"{FRANCE}","{PARIS} café","{BERLIN}"\n'.encode("latin-1"))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"prefs.csv is not UTF-8 text \(byte 0xe9.*save it again as UTF-8"):
        load_preferences(path)
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 7. Texts too long for the context, and a diverged model
# ---------------------------------------------------------------------------------------------

LONG = " ".join([FRANCE] * 8)  # about 80 tokens; the tiny GPT's context holds 64


def test_reward_model_training_names_a_text_too_long_for_the_context():
    model, tokenizer = build_tiny_gpt()
    data = Dataset.from_list([{"prompt": LONG, "chosen": PARIS, "rejected": BERLIN}])
    with pytest.raises(ValueError, match=r"The text 'Q: What.* is \d+ tokens long but the model's context "
                                         r"holds 64\. Shorten the prompt"):
        train_reward_model(RewardModel.from_base(model), tokenizer, data, ONE_STEP)


def test_reward_model_scoring_names_a_text_too_long_for_the_context():
    model, tokenizer = build_tiny_gpt()
    with pytest.raises(ValueError, match=r"The text .* tokens long but the model's context holds 64"):
        RewardModel.from_base(model).score_texts(tokenizer, [FRANCE, LONG], [PARIS, PARIS])


def test_sampling_from_a_diverged_model_says_to_lower_the_learning_rate():
    model, tokenizer = build_tiny_gpt()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or infinite.*Lower the learning rate"):
        generate(model, tokenizer, [FRANCE])


def test_ppo_with_a_huge_learning_rate_stops_with_the_nan_message():
    policy, tokenizer = build_tiny_gpt(seed=1)
    ref, _ = build_tiny_gpt(seed=1)
    config = PPOConfig(steps=4, learning_rate=1e12, warmup_steps=0, rollouts_per_step=8, epochs=1,
                       minibatches=1, max_new_tokens=6, eval_every=0, progress=False)
    with pytest.raises(FloatingPointError, match="probabilities are NaN.*Lower the learning rate"):
        train_ppo(policy, ref, tokenizer, world.prompts("train")[:4], config)
