"""`minirlhf export`: each format's files load back with `datasets` and carry the columns the other
library expects; a folder holding files minirlhf did not write is refused and left as it was."""

import json

import pytest
from datasets import load_dataset

from minirlhf import world
from minirlhf.cli import main
from minirlhf.export import FORMATS, MANIFEST, check_format, export
from minirlhf.integrations.verl import compute_score


def _load(path):
    kind = "parquet" if path.suffix == ".parquet" else "json"
    return load_dataset(kind, data_files=str(path), split="train")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export per format, made by the command line."""
    root = tmp_path_factory.mktemp("exports")
    for fmt in FORMATS:
        assert main(["export", "--format", fmt, "--out", str(root / fmt)]) == 0
    return root


def test_trl_files_are_the_standard_formats(exported):
    folder = exported / "trl"
    sft, pairs = _load(folder / "sft.jsonl"), _load(folder / "preferences_train.jsonl")
    prompts = _load(folder / "prompts_train.jsonl")
    assert sft.column_names == ["prompt", "completion"] and len(sft) > 4000
    assert pairs.column_names == ["prompt", "chosen", "rejected"] and len(pairs) == 2048
    assert len(_load(folder / "preferences_test.jsonl")) == 512
    assert prompts.column_names == ["prompt", "ground_truth"] and len(prompts) == 20
    assert sft[0]["completion"].startswith(" ")
    assert world.true_reward(sft[0]["prompt"], sft[0]["completion"]) > world.REWARD_MALFORMED
    assert prompts[0] == {"prompt": world.make_prompt("France"), "ground_truth": "Paris"}
    held_out = _load(folder / "prompts_held_out.jsonl")
    assert held_out["prompt"] == world.prompts("held_out")


def test_openrlhf_files_carry_the_default_key_names(exported):
    folder = exported / "openrlhf"
    assert _load(folder / "sft.jsonl").column_names == ["input", "output"]  # --data.input_key/output_key
    assert _load(folder / "preferences_train.jsonl").column_names == ["prompt", "chosen", "rejected"]
    prompts = _load(folder / "prompts_train.jsonl")
    assert prompts.column_names == ["input", "label"] and prompts[0]["label"] == "Paris"


def test_verl_parquet_has_verls_layout_and_its_reward_function_scores_it(exported):
    train, test = _load(exported / "verl" / "train.parquet"), _load(exported / "verl" / "test.parquet")
    assert len(train) == 20 and len(test) == 4
    row = train[0]
    assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert row["prompt"] == [{"role": "user", "content": world.make_prompt("France")}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": "Paris"}
    assert row["extra_info"]["index"] == 0 and row["extra_info"]["country"] == "France"
    score = compute_score(row["data_source"], " The capital of France is Paris.",
                          row["reward_model"]["ground_truth"], row["extra_info"])
    assert score == world.REWARD_CORRECT
    assert compute_score(row["data_source"], "Berlin!", "Paris", row["extra_info"]) == world.REWARD_MALFORMED
    with pytest.raises(ValueError, match="data_source"):
        compute_score("openai/gsm8k", "42", "42", {})


def test_an_export_replaces_its_own_files_and_refuses_a_folder_with_foreign_ones(tmp_path, capsys):
    out = tmp_path / "data"
    export("verl", out)
    export("verl", out)  # again into its own folder: allowed
    assert json.loads((out / MANIFEST).read_text())["files"] == ["test.parquet", "train.parquet"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["export", "--format", "verl", "--out", str(out)])
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and (out / "train.parquet").is_file()


def test_unknown_formats_and_files_in_place_of_folders_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="trl, openrlhf, verl"):
        check_format("deepspeed-chat")
    with pytest.raises(SystemExit):
        main(["export", "--format", "deepspeed-chat", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["export", "--format", "trl", "--out", str(tmp_path / "file")])
    assert "is a file" in capsys.readouterr().err
