"""Checkpoint folders saved so that no file is lost, whatever stops the save.

A checkpoint is the folder of files that ``save_pretrained`` writes, plus :data:`CHECKPOINT_INFO`,
minirlhf's record of what the save wrote and each file's sha256. :func:`save_atomically` writes a
new checkpoint beside the old one and swaps them by two renames; :func:`recover_checkpoint` mends a
swap cut in the middle; :func:`check_save_target` refuses, before any work, a folder where a file of
the user's would be lost. What a checkpoint holds (a causal LM, a reward model) and how it is loaded
is :mod:`minirlhf.saved_models`' subject.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from minirlhf.checks import shorten
from minirlhf.files import (
    absolute_path,
    check_writable,
    disk_full,
    is_disk_full,
    is_plain_file,
    read_json_file,
    sha256_of,
)

CHECKPOINT_INFO = "minirlhf.json"
"""The small JSON file minirlhf writes beside a checkpoint's weights: its ``kind`` (``causal_lm`` or
``reward_model``), the fingerprint of its tokenizer, and the ``files`` the save wrote."""


SAVED_FILE_NAMES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json", "special_tokens_map.json", "reward_model.json",
                           "sft_history.json"}
"""The files a save writes before :data:`CHECKPOINT_INFO` (``save_pretrained``'s, a reward model's own
file, SFT's history): all that a folder left by a killed save may hold, so that cleaning it up deletes
nothing else."""


def _old(path: Path) -> Path:
    """Where a save puts the previous checkpoint for a moment: the hidden ``.name.old`` beside it."""
    return path.with_name(f".{path.name}.old")


def read_checkpoint_info(path: str | Path) -> dict | None:
    """The content of ``path``'s :data:`CHECKPOINT_INFO`, or None for a checkpoint saved without it."""
    file = Path(path) / CHECKPOINT_INFO
    if not file.is_file():
        return None
    info = read_json_file(file, fix="Copy the whole checkpoint folder again, or save the model again "
                                    "into a new folder.")
    if not isinstance(info, dict):
        raise ValueError(f"{file} is damaged (not a JSON object). Copy the whole checkpoint folder again, or "
                         "save the model again into a new folder.")
    return info


def files_not_written_by_minirlhf(path: Path) -> list[str]:
    """The names in folder ``path`` that are not part of a minirlhf checkpoint (all of them, sorted,
    when ``path`` is not one): a save must not replace such a folder.

    A checkpoint's own files are its :data:`CHECKPOINT_INFO` and each file that it lists with the
    sha256 the save recorded, unchanged since (so that a planted or edited list cannot make a user's
    file part of a checkpoint). Links and subfolders never are; nor is any file of a folder without
    that record, or with a damaged one."""
    names = sorted(item.name for item in path.iterdir())
    try:
        info = read_checkpoint_info(path) if (path / "config.json").is_file() else None
    except ValueError:  # a damaged record vouches for no file
        info = None
    if info is None:
        return names
    listed = {name for name in info.get("files", []) if isinstance(name, str)}
    hashes = info.get("sha256") if isinstance(info.get("sha256"), dict) else {}

    def ours(name: str) -> bool:
        if not is_plain_file(path / name):
            return False
        return name == CHECKPOINT_INFO or (name in listed and hashes.get(name) == sha256_of(path / name))

    return [name for name in names if not ours(name)]


def check_save_target(path: str | Path) -> Path:
    """Refuse, before any work, to save a checkpoint where a file would be lost; returns the absolute path.

    ``path`` may be new, an empty folder, or a minirlhf checkpoint (which the save replaces). A file,
    a link, a folder holding files minirlhf did not write, or the folder you are in are refused with
    what to do instead.
    """
    given, path = str(path), absolute_path(path)
    if path == Path.cwd() or path in Path.cwd().parents:
        raise ValueError(f"Cannot save a checkpoint as {given!r}: it is the folder you are in (or one "
                         f"above it). Name a new subfolder instead, e.g. {str(Path(given) / 'sft-model')!r}.")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{given!r} is a file or a link, not a checkpoint folder: choose another "
                              "folder, or move it away first.")
    if path.is_dir():
        foreign = files_not_written_by_minirlhf(path)
        if foreign:
            raise FileExistsError(
                f"{given!r} holds files minirlhf did not write ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}), and saving would replace the folder. Choose a "
                "new or empty folder, or move those files away.")
    if os.path.lexists(_old(path)) and not _only_checkpoint_files(_old(path)):
        raise FileExistsError(f"{str(_old(path))!r} is in the way: a save moves the previous checkpoint "
                              "there for a moment, and it holds something minirlhf did not write. Move it "
                              "away, or choose another folder.")
    check_writable(path.parent)
    return path


def recover_checkpoint(path: str | Path) -> None:
    """Finish what a save killed between its two renames left: ``path`` gone and the previous checkpoint
    in the hidden ``.name.old`` beside it. Puts that one back (the new one was not in place yet)."""
    path = absolute_path(path)
    if not path.exists() and (_old(path) / "config.json").is_file():
        os.replace(_old(path), path)


def _only_checkpoint_files(folder: Path) -> bool:
    """Whether ``folder`` (not a link) holds nothing but files with checkpoint names: what a killed
    save leaves, and nothing of the user's."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    return all(is_plain_file(item) and item.name in SAVED_FILE_NAMES | {CHECKPOINT_INFO}
               for item in folder.iterdir())


def _remove_leftovers(path: Path) -> None:
    """Remove what killed saves left beside ``path``: temporary folders, and a ``.name.old`` whose
    replacement is in place. Both names are minirlhf's own (see :func:`save_atomically`); a folder of
    such a name that holds anything but checkpoint files stays."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        if _only_checkpoint_files(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if path.is_dir() and _only_checkpoint_files(_old(path)):
        shutil.rmtree(_old(path), ignore_errors=True)


def save_atomically(objects, path: str | Path, info: dict, extra_files: dict[str, str] | None = None) -> Path:
    """Save models or tokenizers (``save_pretrained``) as one checkpoint folder ``path``, never losing a file.

    * :func:`check_save_target` first refuses a place where a file minirlhf did not write would be lost;
    * everything is written into a fresh hidden folder ``.name.tmp-XXXX`` beside ``path``, with
      ``extra_files`` (name -> text) and last :data:`CHECKPOINT_INFO` (``info`` plus the file list);
    * then two renames swap it in: the old checkpoint to ``.name.old``, the new one to ``path``; the
      old one is deleted after. Killed at any point, ``path`` holds the old or the new checkpoint; only
      between the two renames is it gone, and :func:`recover_checkpoint` (run by every load and save)
      puts the old one back. The next save removes the leftovers of killed saves.
    """
    path = check_save_target(path)
    for name in extra_files or {}:
        if (not isinstance(name, str) or name != Path(name).name or name.startswith(".")
                or name == CHECKPOINT_INFO):
            raise ValueError(f"An extra file's name must be a plain file name (no folder, not hidden, not "
                             f"{CHECKPOINT_INFO}), got {shorten(name)}.")
    recover_checkpoint(path)
    _remove_leftovers(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for item in objects:
            item.save_pretrained(tmp)  # transformers writes model weights as safetensors
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        files = sorted(item.name for item in tmp.iterdir())
        hashes = {name: sha256_of(tmp / name) for name in files}
        (tmp / CHECKPOINT_INFO).write_text(json.dumps({**info, "files": files, "sha256": hashes}, indent=2)
                                           + "\n")
        for item in tmp.iterdir():
            item.chmod(0o644)  # readable by all, like the folder: safetensors writes its file private
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint folder is meant to be shared
        if path.exists():
            os.replace(path, _old(path))  # 1. the old checkpoint steps aside ...
            os.replace(tmp, path)  # 2. ... and the new one takes its place
            shutil.rmtree(_old(path))
        else:
            os.replace(tmp, path)
    except BaseException as error:
        recover_checkpoint(path)  # stopped between 1. and 2.: the old checkpoint goes back
        if is_disk_full(error):
            raise disk_full(error, path) from error
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def check_checkpoint_dir(path: str | Path) -> Path:
    """Raise FileNotFoundError with a hint unless ``path`` is a saved checkpoint folder with its
    config and weights. A checkpoint that a killed save left in a hidden ``.name.old`` is put back first."""
    recover_checkpoint(path)
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"No checkpoint at {str(path)!r} (expected a folder with config.json). Train one with "
            "`minirlhf sft --out <folder>` or pass the folder that save_pretrained wrote."
        )
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"The checkpoint {str(path)!r} has no model.safetensors: it is incomplete. "
                                "Copy the whole folder again, or save the model again.")
    return path
