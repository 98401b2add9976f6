"""Hardening, round two: the demo and export touch no file they did not write (not through links
either), untrusted checkpoints are checked before memory is allocated, nothing broken loads in
silence, two runs never share a folder, the labeling panel keeps its labels, and bad input gets a
clear error before any work. Tiny models, no training: every test here takes well under a second
or two.
"""

import errno
import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file

from minirlhf import cli, export, files, grpo, pipeline, ppo, world
from minirlhf.dpo import DPOConfig, train_dpo
from minirlhf.grpo import GRPOConfig, train_grpo
from minirlhf.models import build_tiny_gpt
from minirlhf.saved_models import BASE_MODEL_DIR, load_model, save_model
from minirlhf.online_dpo import OnlineDPOConfig
from minirlhf.ppo import AdaptiveKLController, PPOConfig, train_ppo
from minirlhf.preferences import load_preferences
from minirlhf.reward import RewardConfig, RewardModel, train_reward_model
from minirlhf.sft import SFTConfig
from minirlhf.tokenizer import build_tokenizer
from minirlhf.checkpoint_files import CHECKPOINT_INFO
from minirlhf.files import BusyError, RunLock
from minirlhf.widgets import LabelingPanel, LabelingSession, labeling_panel

FRANCE = world.make_prompt("France")
PARIS = world.make_response("France", "correct")
BERLIN = world.make_response("France", "wrong", "Berlin")
HEDGE = world.make_response("France", "hedge")
PAIRS = [(FRANCE, PARIS, BERLIN), (FRANCE, HEDGE, PARIS), (FRANCE, BERLIN, HEDGE)]
MEGABYTE = "Paris " * 180_000  # about 1 MB of words the tokenizer knows


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (links are read as what they point to)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def never(*args, **kwargs):
    raise AssertionError("work started although the input was bad")


@pytest.fixture
def mine(tmp_path):
    """A file of the user's, outside any output folder, and its bytes."""
    path = tmp_path / "thesis.tex"
    path.write_text("\\section{My thesis}")
    return path


@pytest.fixture
def no_demo_stages(monkeypatch):
    for stage in ("sft_stage", "reward_stage", "ppo_stage", "dpo_stage", "compare_stage", "train_base_model"):
        monkeypatch.setattr(pipeline, stage, never)


def permuted_tokenizer(seed: int = 0):
    """The world's tokenizer with its words at other ids: as many tokens, other meanings."""
    words = world.all_words()
    random.Random(seed).shuffle(words)
    return build_tokenizer(words)


# ---------------------------------------------------------------------------------------------
# 1. The demo's --out: never the user's files, never through a link
# ---------------------------------------------------------------------------------------------

def test_demo_refuses_a_folder_with_the_users_report(tmp_path, capsys, no_demo_stages):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "report.md").write_text("# my notes")
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--out", str(thesis)])
    err = capsys.readouterr().err
    assert "minirlhf did not write" in err and "report.md" in err and "new or empty folder" in err
    assert snapshot(thesis) == {"report.md": b"# my notes"}
    with pytest.raises(FileExistsError, match="report.md"):  # the library function refuses too
        pipeline.demo(thesis, quick=True)
    assert snapshot(thesis) == {"report.md": b"# my notes"}


def test_demo_refuses_a_linked_output_folder(tmp_path, capsys, no_demo_stages):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--out", str(tmp_path / "link")])
    assert "is a link" in capsys.readouterr().err
    assert list((tmp_path / "real").iterdir()) == []


def test_demo_refuses_a_link_where_its_figure_goes(tmp_path, mine, capsys, no_demo_stages):
    out = pipeline.demo_folder(tmp_path / "out").open()  # an earlier demo's folder ...
    out.write_bytes("comparison_france.png", b"figure")
    (tmp_path / "out" / "comparison_france.png").unlink()  # ... where the figure became a link
    (tmp_path / "out" / "comparison_france.png").symlink_to(mine)
    (tmp_path / "out" / "ppo_training.png").symlink_to(mine)  # and a link the record never listed
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--out", str(tmp_path / "out")])
    assert "comparison_france.png, ppo_training.png" in capsys.readouterr().err
    assert mine.read_text() == "\\section{My thesis}"


def test_a_link_planted_after_the_check_is_replaced_never_written_through(tmp_path, mine):
    folder = pipeline.demo_folder(tmp_path / "out").open()
    (tmp_path / "out" / "report.md").symlink_to(mine)
    with pytest.raises(FileExistsError, match="not a file minirlhf wrote"):
        folder.write_text("report.md", "# report")
    assert mine.read_text() == "\\section{My thesis}"
    assert (tmp_path / "out" / "report.md").is_symlink()  # the user's link stays too


def test_an_earlier_demos_folder_is_reused_and_its_stale_figures_go_but_an_edited_file_stops_it(tmp_path):
    folder = pipeline.demo_folder(tmp_path / "out").open()
    for name in ("report.md", "metrics.json", "sft_loss.png"):
        folder.write_text(name, "earlier run")
    again = pipeline.check_demo_target(tmp_path / "out").open()  # its own files: accepted
    again.write_text("report.md", "this run")
    for name in sorted(set(again.hashes) - again.written):
        again.remove(name)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["minirlhf-demo.json", "report.md"]
    (tmp_path / "out" / "report.md").write_text("this run, with my remarks")  # edited by the user
    with pytest.raises(FileExistsError, match="changed since.*report.md"):
        pipeline.check_demo_target(tmp_path / "out")


def test_a_demo_folder_writes_only_its_own_names(tmp_path):
    folder = pipeline.demo_folder(tmp_path / "out").open()
    for name in ("../escape.png", "notes.txt", ".hidden.png", "sub/x.png"):
        with pytest.raises(ValueError, match="does not write a file named"):
            folder.write_bytes(name, b"x")
    assert not (tmp_path / "escape.png").exists()


def test_a_planted_demo_record_deletes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    digest = files.sha256_of(out / "notes.txt")
    (out / pipeline.DEMO_RECORD).write_text(json.dumps({"files": ["notes.txt"], "sha256": {"notes.txt": digest}}))
    with pytest.raises(FileExistsError, match="notes.txt"):
        pipeline.check_demo_target(out)
    assert (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# 2. export: no writing through links, no deleting what the manifest merely claims
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def small_export(monkeypatch):
    """export() with two tiny tables in place of the world's (no SFT sampling)."""
    table = Dataset.from_dict({"prompt": [FRANCE], "completion": [" " + PARIS]})
    monkeypatch.setattr(export, "export_tables",
                        lambda fmt: {"sft.jsonl": table, "prompts_train.jsonl": table})


def test_export_refuses_a_link_where_its_file_goes(tmp_path, mine, small_export, capsys):
    out = tmp_path / "data"
    export.export("trl", out)
    (out / "sft.jsonl").unlink()
    (out / "sft.jsonl").symlink_to(mine)
    with pytest.raises(SystemExit):
        cli.main(["export", "--format", "trl", "--out", str(out)])
    assert "sft.jsonl" in capsys.readouterr().err
    assert mine.read_text() == "\\section{My thesis}"


def test_export_deletes_nothing_an_edited_manifest_lists(tmp_path, small_export):
    out = tmp_path / "data"
    export.export("trl", out)
    (out / "thesis.tex").write_text("mine")
    manifest = json.loads((out / export.MANIFEST).read_text())
    manifest["files"].append("thesis.tex")
    manifest["sha256"]["thesis.tex"] = files.sha256_of(out / "thesis.tex")  # even with the right checksum
    (out / export.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FileExistsError, match="thesis.tex"):
        export.export("trl", out)
    assert (out / "thesis.tex").read_text() == "mine"


def test_export_refuses_a_manifest_without_checksums_and_a_changed_file(tmp_path, small_export):
    out = tmp_path / "data"
    export.export("trl", out)
    (out / "sft.jsonl").write_text("my edits")
    with pytest.raises(FileExistsError, match="changed since.*sft.jsonl"):
        export.export("trl", out)
    assert (out / "sft.jsonl").read_text() == "my edits"
    (out / export.MANIFEST).write_text(json.dumps({"format": "trl", "files": ["sft.jsonl"]}))  # older minirlhf
    with pytest.raises(ValueError, match="checksums.*older minirlhf"):
        export.export("trl", out)


def test_export_removes_only_its_own_stale_files(tmp_path, small_export, monkeypatch):
    out = tmp_path / "data"
    export.export("trl", out)
    table = Dataset.from_dict({"prompt": [FRANCE]})
    monkeypatch.setattr(export, "export_tables", lambda fmt: {"train.parquet": table})
    export.export("verl", out)
    assert sorted(p.name for p in out.iterdir()) == [export.MANIFEST, "train.parquet"]
    assert json.loads((out / export.MANIFEST).read_text())["format"] == "verl"


# ---------------------------------------------------------------------------------------------
# 3. An untrusted config.json decides no allocation: sizes are checked first
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def tiny(tmp_path):
    model, tokenizer = build_tiny_gpt(seed=1)
    return save_model(model, tokenizer, tmp_path / "ckpt")


@pytest.fixture
def tiny_reward(tmp_path):
    model, tokenizer = build_tiny_gpt(seed=1)
    return RewardModel.from_base(model).save(tmp_path / "rm", tokenizer)


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("field, value", [("n_layer", 8000), ("n_layer", 10**5), ("n_embd", 10**6),
                                          ("n_positions", 10**9), ("vocab_size", 10**9), ("n_layer", 0),
                                          ("n_head", "4"), ("n_layer", True)])
def test_a_config_asking_for_absurd_sizes_is_refused_before_allocating(tiny, field, value):
    edit_config(tiny, **{field: value})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"config.json asks for {field} = .*outside the 1 to .* before any memory"):
        load_model(tiny)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("value", [10**7, 10**9])
def test_a_reward_models_config_asking_for_a_huge_vocabulary_is_refused(tiny_reward, value):
    edit_config(tiny_reward, vocab_size=value)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="vocab_size"):
        RewardModel.load(tiny_reward)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("loader", [load_model, RewardModel.load])
def test_a_config_within_limits_that_the_weights_do_not_fit_is_refused_before_allocating(tiny, tiny_reward,
                                                                                           loader):
    path = tiny if loader is load_model else tiny_reward
    edit_config(path, n_layer=128, n_embd=16384, n_head=128)  # 400 billion weights, if allocated
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not the checkpoint its config.json describes"):
        loader(path)
    assert time.perf_counter() - start < 10


def test_a_config_that_is_huge_or_nested_too_deep_is_named(tiny):
    (tiny / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="config.json is damaged \\(nested too deep\\)"):
        load_model(tiny)
    (tiny / "config.json").write_text(json.dumps({"model_type": "gpt2", "pad": "x" * 2_000_000}))
    with pytest.raises(ValueError, match="config.json is 2,000,0.. bytes"):
        load_model(tiny)


def test_a_weights_header_that_lies_about_its_size_is_named(tiny):
    weights = tiny / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors .*damaged.*Copy the whole checkpoint"):
        load_model(tiny)


def test_weights_with_an_extra_tensor_are_refused(tiny):
    weights = load_file(tiny / "model.safetensors")
    save_file({**weights, "transformer.h.9.attn.c_attn.weight": torch.zeros(64, 192)},
              tiny / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="tensors the model does not have.*h.9"):
        load_model(tiny)


# ---------------------------------------------------------------------------------------------
# 4. The adaptive KL controller never drives beta negative
# ---------------------------------------------------------------------------------------------

def test_an_adaptive_kl_horizon_that_could_turn_beta_negative_is_refused_when_configured():
    with pytest.raises(ValueError, match=r"horizon \(10\) is too short for 64 rollouts.*horizon >= 25.6"):
        PPOConfig(adaptive_kl=True, horizon=10)
    PPOConfig(adaptive_kl=False, horizon=10)  # not used: no harm
    with pytest.raises(ValueError, match="too short"):
        AdaptiveKLController(0.1, 0.5, horizon=10).update(current_kl=0.0, n_steps=64)


def test_beta_stays_positive_under_any_kl_at_the_shortest_horizon():
    controller = AdaptiveKLController(0.1, 0.5, horizon=PPOConfig.rollouts_per_step / 2.5)
    for kl in [0.0] * 50 + [100.0] * 10 + [float("inf")] * 3:
        assert controller.update(kl, PPOConfig.rollouts_per_step) > 0


# ---------------------------------------------------------------------------------------------
# 5. Broken models do not load in silence
# ---------------------------------------------------------------------------------------------

def test_a_model_cannot_be_saved_with_a_permuted_tokenizer_of_the_same_size(tmp_path):
    model, tokenizer = load_model(BASE_MODEL_DIR)
    permuted = permuted_tokenizer()
    assert len(permuted) == len(tokenizer)
    with pytest.raises(ValueError, match="not the one the model was built or loaded with.*other ids"):
        save_model(model, permuted, tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("record", ["kept", "removed"])
def test_a_checkpoint_whose_tokenizer_was_permuted_is_refused(tmp_path, record):
    path = tmp_path / "sft"
    shutil.copytree(BASE_MODEL_DIR, path)  # its config.json has no tokenizer stamp (saved before it)
    permuted_tokenizer(1).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "tokenizer.json", path / "tokenizer.json")
    info = json.loads((path / CHECKPOINT_INFO).read_text())
    if record == "kept":  # the fingerprint rewritten to match: only the weights can tell
        info["tokenizer_sha256"] = None
        (path / CHECKPOINT_INFO).write_text(json.dumps(info))
    else:
        (path / CHECKPOINT_INFO).unlink()
    with pytest.raises(ValueError, match="far worse than random guessing.*permuted tokenizer"):
        load_model(path)


def test_a_stamped_checkpoint_refuses_a_permuted_tokenizer_even_without_minirlhf_json(tiny, tmp_path):
    permuted_tokenizer(2).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "tokenizer.json", tiny / "tokenizer.json")
    (tiny / CHECKPOINT_INFO).unlink()
    with pytest.raises(ValueError, match="not the one the model was built or loaded with"):
        load_model(tiny)  # random weights read like guessing: the stamp in config.json tells


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.int64])
def test_weights_that_are_not_floating_point_are_refused(tiny, dtype):
    weights = load_file(tiny / "model.safetensors")
    save_file({k: v.to(dtype) for k, v in weights.items()}, tiny / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not floating-point numbers"):
        load_model(tiny)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["causal_lm", "reward_model"])
def test_nan_or_infinite_weights_are_refused(tiny, tiny_reward, bad, which):
    path = tiny if which == "causal_lm" else tiny_reward
    weights = load_file(path / "model.safetensors")
    name = next(k for k in weights if k.endswith("mlp.c_fc.weight"))
    weights[name][0, 0] = bad
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"NaN or infinite numbers \\(in .*{name.split('.', 1)[1]}\\)"):
        load_model(path) if which == "causal_lm" else RewardModel.load(path)


def test_a_diverged_model_is_not_saved_over_a_good_checkpoint(tiny):
    before = snapshot(tiny)
    model, tokenizer = load_model(tiny)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="diverged, so it is not saved"):
        save_model(model, tokenizer, tiny)
    assert snapshot(tiny) == before


@pytest.mark.parametrize("trainer", ["dpo", "reward"])
@pytest.mark.parametrize("tokenizer_kind", ["larger", "permuted"])
def test_training_refuses_a_tokenizer_that_is_not_the_models(trainer, tokenizer_kind):
    model, _ = build_tiny_gpt()
    tokenizer = (build_tokenizer(world.all_words() + ["Atlantis", "Avalon"]) if tokenizer_kind == "larger"
                 else permuted_tokenizer())
    data = Dataset.from_list([{"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN}])
    message = "has 71 tokens but the model's embedding has only 69" if tokenizer_kind == "larger" else "other ids"
    with pytest.raises(ValueError, match=message):
        if trainer == "dpo":
            train_dpo(model, build_tiny_gpt()[0], tokenizer, data, DPOConfig(progress=False))
        else:
            train_reward_model(RewardModel.from_base(model), tokenizer, data, RewardConfig(steps=1, progress=False))


# ---------------------------------------------------------------------------------------------
# 6. Two runs into one folder: the second is refused at once, the first goes on
# ---------------------------------------------------------------------------------------------

def test_a_second_sft_into_the_same_folder_is_refused_while_the_first_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "train_base_model", never)
    with RunLock(tmp_path / ".model.lock", "the checkpoint"):  # the first run holds it
        with pytest.raises(SystemExit) as stopped:
            cli.main(["sft", "--out", str(tmp_path / "model")])
        assert stopped.value.code == 1
        assert "Another minirlhf run (process " in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []  # the lock file goes with its run


def test_a_second_demo_into_the_same_folder_is_refused_before_any_stage(tmp_path, no_demo_stages, capsys):
    first = pipeline.demo_folder(tmp_path / "out").open()
    first.write_text("RUNNING", "the first run")
    with first.lock():
        with pytest.raises(BusyError, match="Another minirlhf run .*is writing into"):
            pipeline.demo(tmp_path / "out", quick=True)
        with pytest.raises(SystemExit):
            cli.main(["demo", "--quick", "--out", str(tmp_path / "out")])
        assert "Wait until it ends, or choose another output folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "RUNNING").read_text() == "the first run"


def test_a_lock_left_by_a_killed_run_does_not_block_and_a_linked_lock_is_refused(tmp_path, mine):
    (tmp_path / "stale.lock").write_text("process 999999")  # its process is gone: no flock on it
    with RunLock(tmp_path / "stale.lock", "x"):
        pass
    assert not (tmp_path / "stale.lock").exists()
    (tmp_path / "linked.lock").symlink_to(mine)
    with pytest.raises(FileExistsError, match="is a link"):
        RunLock(tmp_path / "linked.lock", "x").__enter__()
    (tmp_path / "users.lock").write_text("my shopping list")
    with pytest.raises(FileExistsError, match="not a lock minirlhf made"):
        RunLock(tmp_path / "users.lock", "x").__enter__()
    assert (tmp_path / "users.lock").read_text() == "my shopping list"
    assert mine.read_text() == "\\section{My thesis}"


# ---------------------------------------------------------------------------------------------
# 7. The labeling panel saves as it goes and takes up where it stopped
# ---------------------------------------------------------------------------------------------

def test_labels_survive_a_kernel_restart(tmp_path):
    file = tmp_path / "my_labels.json"
    panel = LabelingPanel(LabelingSession(PAIRS, save_to=file))
    panel.buttons["left"].click()
    panel.buttons["skip"].click()
    assert "saved in" in panel.count.value
    del panel  # the kernel restarts
    again = LabelingSession(PAIRS, save_to=file)  # the same pairs: taken up
    assert again.choices == ["left", "skip"] and again.current == PAIRS[2]
    again.undo()
    resumed = LabelingSession.load(file)  # the pairs from the file alone
    assert resumed.pairs == PAIRS and resumed.choices == ["left"]
    resumed.choose("right")
    assert LabelingSession.load(file).to_dataset()["chosen"] == [PARIS, PARIS]


def test_labeling_panel_with_a_save_file_resumes_without_sampling(tmp_path, monkeypatch):
    file = tmp_path / "my_labels.json"
    session = LabelingSession(PAIRS, save_to=file)
    session.choose("left")
    monkeypatch.setattr(LabelingSession, "from_model", never)
    panel = labeling_panel(None, None, save_to=file)
    assert panel.session.choices == ["left"] and panel.session.save_to == file


def test_a_save_file_that_is_not_a_labeling_session_is_never_overwritten(tmp_path, mine):
    with pytest.raises(FileExistsError, match="not a file of labels.*choose another file name"):
        LabelingSession(PAIRS, save_to=mine)
    assert mine.read_text() == "\\section{My thesis}"
    (tmp_path / "labels.json").symlink_to(mine)
    with pytest.raises(FileExistsError, match="is a link"):
        LabelingSession(PAIRS, save_to=tmp_path / "labels.json")
    LabelingSession(PAIRS, save_to=tmp_path / "other.json").choose("left")
    with pytest.raises(FileExistsError, match="labels of other pairs.*LabelingSession.load"):
        LabelingSession(PAIRS[:2], save_to=tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LabelingSession(PAIRS, save_to=tmp_path / "no" / "such" / "labels.json")
    assert mine.read_text() == "\\section{My thesis}"


def test_a_labeling_session_that_cannot_save_keeps_its_state_and_says_so(tmp_path, monkeypatch):
    panel = LabelingPanel(LabelingSession(PAIRS, save_to=tmp_path / "labels.json"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    panel.buttons["left"].click()
    assert panel.session.choices == [] and "Not saved" in panel.count.value and "disk is full" in panel.count.value
    assert not [p for p in tmp_path.iterdir() if p.name != "labels.json"]  # no temporary file left


# ---------------------------------------------------------------------------------------------
# 8. Raw errors become messages that name the input and the fix
# ---------------------------------------------------------------------------------------------

def test_a_csv_row_with_an_extra_field_names_its_line_and_the_quoting(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text(f"prompt,chosen,rejected\n{FRANCE},{PARIS},{BERLIN}\n"
                    f"{FRANCE},Paris, I think,{BERLIN}\n")
    with pytest.raises(ValueError, match=r"prefs.csv, line 3: 4 fields where the header has 3.*double quotes"):
        load_preferences(path)
    path.write_text(f"prompt,chosen,rejected\n{FRANCE},{PARIS}\n")
    with pytest.raises(ValueError, match=r"line 2: 2 fields where the header has 3"):
        load_preferences(path)
    path.write_text(f'prompt,chosen,rejected\n{FRANCE},"{PARIS[:-1]}, I think.",{BERLIN}\n')
    assert load_preferences(path)[0]["chosen"] == PARIS[:-1] + ", I think."


def test_json_columns_of_unequal_length_are_named(tmp_path):
    path = tmp_path / "prefs.json"
    path.write_text(json.dumps({"prompt": [FRANCE, FRANCE], "chosen": [PARIS], "rejected": [BERLIN, HEDGE]}))
    with pytest.raises(ValueError, match=r"different lengths \(prompt: 2, chosen: 1, rejected: 2\)"):
        load_preferences(path)
    path.write_text(json.dumps({"prompt": FRANCE, "chosen": PARIS, "rejected": BERLIN}))
    with pytest.raises(ValueError, match="needs a list for each column"):
        load_preferences(path)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_nested_too_deep_is_named_with_its_file(tmp_path, suffix):
    path = tmp_path / f"prefs{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match=rf"prefs{suffix}.*nested too deep"):
        load_preferences(path)


@pytest.mark.parametrize("seed", [str(10**23), "-1", "2.5", "ten"])
def test_a_seed_out_of_range_is_a_usage_error(seed, capsys, no_demo_stages, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--quick", "--out", str(tmp_path / "out"), "--seed", seed])
    err = capsys.readouterr().err
    assert "--seed" in err and ("2**32 - 1" in err or "must be an integer" in err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config", [SFTConfig, RewardConfig, PPOConfig, GRPOConfig, DPOConfig, OnlineDPOConfig])
def test_every_config_refuses_a_seed_out_of_range(config):
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 4,294,967,295"):
        config(seed=10**23)
    with pytest.raises(ValueError, match="seed must be"):
        config(seed=-1)


def test_a_full_disk_during_a_save_says_so_and_keeps_the_old_checkpoint(tiny, monkeypatch):
    before = snapshot(tiny)
    model, tokenizer = build_tiny_gpt(seed=2)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tokenizer), "save_pretrained", full)
    with pytest.raises(OSError, match="The disk is full.*Free some space.*unchanged"):
        save_model(model, tokenizer, tiny)
    assert snapshot(tiny) == before
    assert sorted(p.name for p in tiny.parent.iterdir()) == ["ckpt"]


def test_a_full_disk_during_sft_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "train_base_model",
                        lambda seed, config: (*build_tiny_gpt(seed=seed), [{"loss": 1.0}]))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(build_tokenizer()), "save_pretrained", full)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["sft", "--out", str(tmp_path / "model")])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("minirlhf: error: The disk is full") and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == []


def test_an_output_folder_on_a_nearly_full_disk_fails_before_any_work(tmp_path, monkeypatch, capsys,
                                                                        no_demo_stages):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 99, 1_000_000))
    for command in (["demo"], ["sft"], ["export", "--format", "trl"]):
        with pytest.raises(SystemExit):
            cli.main([*command, "--out", str(tmp_path / "out")])
        assert "Only 1.0 MB are free" in capsys.readouterr().err


def test_a_full_disk_during_an_export_leaves_no_half_file(tmp_path, small_export, monkeypatch):
    def full(self, path, **kwargs):
        Path(path).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Dataset, "to_json", full)
    with pytest.raises(OSError, match="The disk is full: could not finish writing .*sft.jsonl"):
        export.export("trl", tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 9. No silent no-ops, no unclear limits
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, field", [(SFTConfig, "learning_rate"), (DPOConfig, "learning_rate"),
                                           (PPOConfig, "learning_rate"), (GRPOConfig, "learning_rate"),
                                           (RewardConfig, "learning_rate"), (RewardConfig, "head_learning_rate"),
                                           (OnlineDPOConfig, "learning_rate")])
def test_a_learning_rate_too_small_to_change_a_weight_is_refused(config, field):
    with pytest.raises(ValueError, match=f"{field} must be at least 1e-09, got 1e-320.*silently do nothing"):
        config(**{field: 1e-320})


@pytest.mark.parametrize("config", [DPOConfig, PPOConfig, GRPOConfig, OnlineDPOConfig])
@pytest.mark.parametrize("beta", [1e-300, 1e300, 1e-5, 2e4])
def test_a_beta_outside_what_can_be_computed_is_refused_with_the_range(config, beta):
    with pytest.raises(ValueError, match=r"beta must be between 0.0001 and 10000.*Try 0.1"):
        config(beta=beta)


def test_the_edges_of_the_beta_range_and_zero_where_allowed_are_accepted():
    for beta in (1e-4, 1e4):
        DPOConfig(beta=beta), PPOConfig(beta=beta)
    PPOConfig(beta=0.0)


def test_a_megabyte_of_text_gives_a_short_message():
    model, tokenizer = build_tiny_gpt()
    cases = [
        lambda: load_preferences([{"prompt": FRANCE, "chosen": MEGABYTE, "rejected": MEGABYTE + " "}]),
        lambda: load_preferences([{"prompt": FRANCE, "chosen": [MEGABYTE], "rejected": BERLIN}]),
        # where the text is tokenised first, a fifth of it keeps the test fast: the message is as short
        lambda: train_reward_model(RewardModel.from_base(build_tiny_gpt()[0]), build_tokenizer(),
                                   Dataset.from_list([{"prompt": FRANCE, "chosen": MEGABYTE[:200_000],
                                                       "rejected": BERLIN}]),
                                   RewardConfig(steps=1, progress=False)),
        lambda: train_dpo(model, model, tokenizer, Dataset.from_list([{"prompt": FRANCE, "chosen": "zzz " * 50_000,
                                                                       "rejected": BERLIN}])),
        lambda: SFTConfig(steps=MEGABYTE),
        lambda: LabelingSession([(FRANCE, MEGABYTE, MEGABYTE)]),
    ]
    for case in cases:
        with pytest.raises(ValueError) as error:
            case()
        assert len(str(error.value)) < 1000, str(error.value)[:300]
        assert "characters)" in str(error.value) or "got list" in str(error.value)


@pytest.mark.parametrize("trainer", ["ppo", "grpo"])
def test_a_prompt_outside_the_world_is_refused_before_the_first_step(trainer, monkeypatch):
    policy, tokenizer = build_tiny_gpt()
    reward_model = RewardModel.from_base(build_tiny_gpt()[0])
    monkeypatch.setattr(ppo, "rollout", never)
    monkeypatch.setattr(grpo, "rollout", never)
    prompts = [FRANCE, "Q: What is the capital of Atlantis? A:"]
    with pytest.raises(ValueError, match="Prompt 1 .*Atlantis.* is not one of the toy world's.*make_prompt"):
        if trainer == "ppo":
            train_ppo(policy, build_tiny_gpt()[0], tokenizer, prompts, PPOConfig(progress=False),
                      reward_model=reward_model)
        else:
            train_grpo(policy, build_tiny_gpt()[0], tokenizer, prompts, GRPOConfig(progress=False),
                       reward_model=reward_model)


# ---------------------------------------------------------------------------------------------
# 10. Threads: one by default for the command line, and the caller's setting kept
# ---------------------------------------------------------------------------------------------

def test_the_command_line_computes_with_one_thread_and_restores_the_callers(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(export, "export", lambda fmt, out: seen.append(torch.get_num_threads()) or [])
    monkeypatch.delenv("MINIRLHF_THREADS", raising=False)
    before = torch.get_num_threads()
    cli.main(["export", "--format", "trl", "--out", str(tmp_path / "a")])
    monkeypatch.setenv("MINIRLHF_THREADS", str(os.cpu_count()))
    cli.main(["export", "--format", "trl", "--out", str(tmp_path / "b")])
    cli.main(["export", "--format", "trl", "--out", str(tmp_path / "c"), "--threads", "1"])
    assert seen == [1, os.cpu_count(), 1]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", ["0", "-1", "two", "100000"])
def test_a_thread_count_out_of_range_is_a_usage_error(threads, capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["export", "--format", "trl", "--out", str(tmp_path / "x"), "--threads", threads])
    assert "--threads" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# More of the same: checkpoint folders, and files the loader reads
# ---------------------------------------------------------------------------------------------

def test_a_planted_checkpoint_record_cannot_make_a_users_file_part_of_the_checkpoint(tiny):
    (tiny / "notes.txt").write_text("mine")
    info = json.loads((tiny / CHECKPOINT_INFO).read_text())
    info["files"].append("notes.txt")
    info["sha256"]["notes.txt"] = "0" * 64  # a guess: the save recorded no such file
    (tiny / CHECKPOINT_INFO).write_text(json.dumps(info))
    with pytest.raises(FileExistsError, match="notes.txt"):
        save_model(*build_tiny_gpt(seed=2), tiny)
    assert (tiny / "notes.txt").read_text() == "mine"


def test_a_link_inside_a_checkpoint_is_not_the_checkpoints(tiny, mine):
    (tiny / "model.safetensors").unlink()
    (tiny / "model.safetensors").symlink_to(mine)
    with pytest.raises(FileExistsError, match="model.safetensors"):
        save_model(*build_tiny_gpt(seed=2), tiny)
    assert mine.read_text() == "\\section{My thesis}"


def test_folders_of_the_users_named_like_a_saves_leftovers_are_kept(tiny):
    for name in (".ckpt.tmp-mine", ".ckpt.old"):
        (tiny.parent / name).mkdir()
        (tiny.parent / name / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"\.ckpt\.old' is in the way.*Move it away"):
        save_model(*build_tiny_gpt(seed=2), tiny)
    shutil.rmtree(tiny.parent / ".ckpt.old")
    save_model(*build_tiny_gpt(seed=2), tiny)
    assert (tiny.parent / ".ckpt.tmp-mine" / "notes.txt").read_text() == "mine"


def test_an_extra_file_name_cannot_leave_the_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="plain file name"):
        save_model(*build_tiny_gpt(), tmp_path / "m", extra_files={"../escape.txt": "x"})
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "m").exists()


def test_a_tokenizer_file_that_cannot_be_read_is_named(tiny):
    (tiny / "tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="tokenizer.json.*cannot be read.*Copy the whole checkpoint"):
        load_model(tiny)


def test_an_export_into_a_linked_folder_is_refused(tmp_path, small_export, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SystemExit):
        cli.main(["export", "--format", "trl", "--out", str(tmp_path / "link")])
    assert "is a link" in capsys.readouterr().err
    assert list((tmp_path / "real").iterdir()) == []


def test_a_seed_torch_cannot_take_is_named_wherever_it_is_given():
    model, tokenizer = build_tiny_gpt()
    with pytest.raises(ValueError, match="seed must be an integer from 0 to"):
        LabelingSession.from_model(model, tokenizer, n_pairs=2, seed=10**23)


def test_a_labeling_session_writes_nothing_before_the_first_click(tmp_path):
    session = LabelingSession(PAIRS, save_to=tmp_path / "my_labels.json")  # as in a headless notebook run
    assert list(tmp_path.iterdir()) == []
    session.choose("left")
    assert json.loads((tmp_path / "my_labels.json").read_text())["choices"] == ["left"]


def test_only_temporary_files_named_as_minirlhf_names_them_are_cleaned_up(tmp_path):
    folder = pipeline.demo_folder(tmp_path / "out").open()
    folder.write_text("report.md", "# report")
    (tmp_path / "out" / ".report.md.tmp-k3j9x_2a").write_text("half")  # what a killed write leaves
    (tmp_path / "out" / ".report.md.tmp-notes").write_text("mine")
    with pytest.raises(FileExistsError, match=r"\.report\.md\.tmp-notes"):
        pipeline.check_demo_target(tmp_path / "out")
    (tmp_path / "out" / ".report.md.tmp-notes").rename(tmp_path / "notes")
    pipeline.demo_folder(tmp_path / "out").open()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["minirlhf-demo.json", "report.md"]
    assert (tmp_path / "notes").read_text() == "mine"
