"""The toy world's data in the formats of the industrial trainers: TRL, OpenRLHF and verl.

Three kinds of data leave minirlhf (each a ``datasets.Dataset``, built by the functions below):

* the SFT corpus (:func:`sft_data`): ``prompt`` and ``completion``;
* the preference pairs (:func:`preference_data`): ``prompt``, ``chosen``, ``rejected``, split into
  ``train`` and ``test`` (the rater's labels of :func:`minirlhf.preferences.default_preferences`);
* the RL prompts with their ground truth (:func:`prompt_data`): ``prompt`` and ``ground_truth`` (the
  capital), for training (``train``) and for measuring what carries over (``held_out``).

:func:`export` writes them into a folder, in one of three layouts (:data:`FORMATS`)::

    trl       sft.jsonl                        prompt, completion
              preferences_{train,test}.jsonl   prompt, chosen, rejected
              prompts_{train,held_out}.jsonl   prompt, ground_truth
    openrlhf  sft.jsonl                        input, output
              preferences_{train,test}.jsonl   prompt, chosen, rejected
              prompts_{train,held_out}.jsonl   input, label
    verl      train.parquet, test.parquet      data_source, prompt (chat messages), ability,
                                               reward_model {style: "rule", ground_truth},
                                               extra_info

TRL calls the three "prompt-completion", "preference" and "prompt-only" data (``GRPOTrainer``
hands ``ground_truth`` to reward functions); OpenRLHF reads the columns named by its options
``--data.input_key``, ``--data.output_key``, ``--data.prompt_key``, ``--data.chosen_key``,
``--data.rejected_key`` and ``--data.label_key``.

Answers start with a space (``" The capital of France is Paris."``): a sub-word tokenizer needs it
between ``A:`` and the answer, and minirlhf's word-level tokenizer and reward ignore it.

Every export also writes :data:`MANIFEST`, the list of the files it wrote with their sha256. An export
goes into a new or empty folder, or into one that an earlier export wrote (its files are replaced); a
folder holding any other file, a file changed since, or a link is refused, so that no file minirlhf
did not write is ever replaced or deleted, nor written through a link.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict

from minirlhf import world
from minirlhf.data import sft_corpus
from minirlhf.files import check_free_space
from minirlhf.folders import OwnedFolder
from minirlhf.preferences import PREFERENCE_COLUMNS, default_preferences

FORMATS: tuple[str, ...] = ("trl", "openrlhf", "verl")
"""The layouts :func:`export` writes: TRL's, OpenRLHF's and verl's (see the table above)."""
MANIFEST = "minirlhf-export.json"
"""The file, in every export folder, that lists what the export wrote (and so may replace)."""
DATA_SOURCE = "minirlhf/capitals"
"""verl's ``data_source`` of every row: the key by which verl picks a reward function."""
ABILITY = "geography"
"""verl's ``ability`` of every row (a free-form label of the task)."""
PROMPT_SPLITS = {"train": "train", "held_out": "test"}
"""minirlhf's prompt splits and the file names verl gives them (verl trains on ``train.parquet``
and validates on ``test.parquet``)."""


# ---------------------------------------------------------------------------------------------
# The data, in TRL's standard formats (the other layouts rename their columns)
# ---------------------------------------------------------------------------------------------

def answer_text(response: str) -> str:
    """An answer as the exported files hold it: with the leading space a sub-word tokenizer needs."""
    return " " + response


def sft_data() -> Dataset:
    """The SFT corpus (:func:`minirlhf.data.sft_corpus`) as TRL's prompt-completion data:
    columns ``prompt`` and ``completion`` (4,560 rows by default)."""
    corpus = sft_corpus()
    return Dataset.from_dict({"prompt": corpus["prompt"],
                              "completion": [answer_text(r) for r in corpus["response"]]})


def preference_data() -> DatasetDict:
    """The tutorial's preference pairs (:func:`minirlhf.preferences.default_preferences`, sampled from
    the shipped SFT model and labelled by the simulated rater) as TRL's preference data: splits
    ``train`` and ``test``, columns ``prompt``, ``chosen``, ``rejected``."""
    pairs = default_preferences(progress=False)
    return DatasetDict({split: Dataset.from_dict(
        {"prompt": data["prompt"], "chosen": [answer_text(y) for y in data["chosen"]],
         "rejected": [answer_text(y) for y in data["rejected"]]}) for split, data in pairs.items()})


def prompt_data(split: str = "train") -> Dataset:
    """The prompts of ``split`` (``"train"``, ``"held_out"`` or ``"all"``, see
    :func:`minirlhf.world.prompts`) with the correct capital: columns ``prompt``, ``ground_truth``.
    The reward is :func:`minirlhf.world.true_reward` of the prompt and the answer; the capital is
    what a rule-based reward in another library checks."""
    prompts = world.prompts(split)
    capitals = [world.CAPITAL_OF[world.country_of_prompt(p)] for p in prompts]
    return Dataset.from_dict({"prompt": prompts, "ground_truth": capitals})


def verl_rows(split: str) -> Dataset:
    """The prompts of ``split`` in verl's RL layout, one row per prompt::

        data_source   "minirlhf/capitals"
        prompt        [{"role": "user", "content": "Q: What is the capital of France? A:"}]
        ability       "geography"
        reward_model  {"style": "rule", "ground_truth": "Paris"}
        extra_info    {"split": "train", "index": 0, "country": "France", "question": <the prompt>}

    :func:`minirlhf.integrations.verl.compute_score` scores an answer from these fields."""
    data = prompt_data(split)
    return Dataset.from_list([
        {"data_source": DATA_SOURCE, "prompt": [{"role": "user", "content": prompt}], "ability": ABILITY,
         "reward_model": {"style": "rule", "ground_truth": capital},
         "extra_info": {"split": split, "index": i, "country": world.country_of_prompt(prompt),
                        "question": prompt}}
        for i, (prompt, capital) in enumerate(zip(data["prompt"], data["ground_truth"]))])


def _renamed(data: Dataset, names: dict[str, str]) -> Dataset:
    return data.rename_columns({old: new for old, new in names.items() if old != new})


OPENRLHF_COLUMNS = {"sft": {"prompt": "input", "completion": "output"},
                    "preferences": {name: name for name in PREFERENCE_COLUMNS},
                    "prompts": {"prompt": "input", "ground_truth": "label"}}
"""TRL's column names -> the names OpenRLHF's ``--data.*_key`` options expect by default."""


def export_tables(fmt: str) -> dict[str, Dataset]:
    """The files of an export in format ``fmt`` (one of :data:`FORMATS`): ``{file name: Dataset}``."""
    check_format(fmt)
    if fmt == "verl":
        return {f"{name}.parquet": verl_rows(split) for split, name in PROMPT_SPLITS.items()}
    tables = {"sft": sft_data(), **{f"preferences_{s}": d for s, d in preference_data().items()},
              **{f"prompts_{s}": prompt_data(s) for s in PROMPT_SPLITS}}
    if fmt == "openrlhf":
        tables = {name: _renamed(data, OPENRLHF_COLUMNS[name.split("_")[0]]) for name, data in tables.items()}
    return {f"{name}.jsonl": data for name, data in tables.items()}


# ---------------------------------------------------------------------------------------------
# Writing them
# ---------------------------------------------------------------------------------------------

def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is one of :data:`FORMATS`, else raise a ValueError that lists them."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    return fmt


EXPORT_FILES = frozenset({"sft.jsonl", "preferences_train.jsonl", "preferences_test.jsonl",
                          "prompts_train.jsonl", "prompts_held_out.jsonl", "train.parquet", "test.parquet"})
"""Every file name an export may write (in any format): no other file is ever replaced or removed."""


def export_folder(folder: str | Path, fmt: str | None = None) -> OwnedFolder:
    """The output ``folder`` of an export, with :data:`MANIFEST` as the record of what it wrote
    (see :class:`minirlhf.folders.OwnedFolder`)."""
    return OwnedFolder(folder, MANIFEST, EXPORT_FILES.__contains__, "an export",
                       info={"format": fmt} if fmt else None)


def check_export_target(folder: str | Path) -> Path:
    """Refuse, before any work, an output ``folder`` where an export would replace a file that
    minirlhf did not write: it must be new, empty, or an earlier export's folder whose files are as
    the export wrote them (no link, no file added or changed). Returns it as a Path."""
    return export_folder(folder).check().path


def export(fmt: str, out: str | Path) -> list[Path]:
    """Write the toy world's data in format ``fmt`` (``"trl"``, ``"openrlhf"`` or ``"verl"``) into the
    folder ``out``; return the paths written, :data:`MANIFEST` last.

    JSON Lines files hold one row per line (``Dataset.to_json``); verl's files are parquet. Files of an
    earlier export into ``out`` that this one does not write are removed; any other file in ``out``
    (or a changed one, or a link) makes the export refuse, before anything is written (see
    :func:`check_export_target`). Each file is written whole into a new hidden file and renamed into
    place, and :data:`MANIFEST` records it with its sha256 as soon as it is there.
    """
    check_format(fmt)
    folder = export_folder(out, fmt).check()
    check_free_space(folder.path)
    tables = export_tables(fmt)
    written = []
    with folder.open().lock():
        folder.check()  # again, under the lock: another export may have finished meanwhile
        for name, data in tables.items():
            if name.endswith(".parquet"):
                written.append(folder.write_with(name, data.to_parquet))
            else:
                written.append(folder.write_with(
                    name, lambda path, data=data: data.to_json(path, lines=True, force_ascii=False)))
        for stale in sorted(set(folder.hashes) - set(tables)):
            folder.remove(stale)  # an earlier export's file, unchanged since, that this one does not write
    return written + [folder.path / MANIFEST]
