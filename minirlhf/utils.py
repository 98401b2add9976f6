"""Small helpers shared by every stage: seeding, the device, checkpoint I/O, input checks."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import random
import re
import shutil
import stat
import tempfile
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

try:  # POSIX only: on Windows a run lock falls back to an exclusive create
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python and torch, and return a CPU ``torch.Generator`` seeded with ``seed``.

    Pass the generator to sampling code so that the same seed gives the same numbers. A seed outside
    0 to 2**63 - 1 (what torch takes) is refused with a message (see :func:`check_seed`).
    """
    check_seed(seed, maximum=2**63 - 1)  # seeds derived in a run (seed + step) may pass 2**32 - 1
    random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


DEFAULT_THREADS = 1
"""CPU threads the ``minirlhf`` command computes with. The model is so small that a second thread
saves little on an idle machine, and beside other busy work threads that wait on each other lose
far more than a fair share of the CPU (``benchmarks/busy_laptop.py`` measures both)."""


def set_threads(n: int) -> None:
    """Let torch compute with ``n`` CPU threads (``torch.set_num_threads``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"The number of threads must be a whole number >= 1, got {n!r}.")
    torch.set_num_threads(n)


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    """Raise a ValueError that names ``name`` unless ``value`` is a finite number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return value


MAX_SEED = 2**32 - 1
"""The largest seed: numpy, which ``datasets`` shuffles with, takes seeds below 2**32."""
BETA_RANGE = (1e-4, 1e4)
"""The KL coefficients minirlhf computes with (besides 0 where allowed): below 1e-4, pi* is already
the best answer alone; above 1e4 it is pi_ref itself; far outside, exp(r / beta) under- or overflows."""
MIN_LEARNING_RATE = 1e-9
"""The smallest learning rate: below it an Adam step moves no float32 weight of a model like this one."""


def shorten(value, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, with the full length said: error messages
    quote the user's text, and a megabyte of it would bury the message."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:limit - 5]}...{text[-3:]}{size}"


def check_seed(seed, name: str = "seed", maximum: int = MAX_SEED) -> int:
    """Raise a ValueError that names ``name`` unless ``seed`` is an integer from 0 to ``maximum``
    (:data:`MAX_SEED`: 2**32 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= maximum:
        raise ValueError(f"{name} must be an integer from 0 to {maximum:,}"
                         f"{' (2**32 - 1)' if maximum == MAX_SEED else ''}, got {shorten(seed)}. Any number "
                         "in that range gives a different run, e.g. 0, 1, 2.")
    return seed


def lr_factor(step: int, total: int, warmup: int = 0, decay: str = "cosine") -> float:
    """The learning-rate multiplier at ``step`` (0-based), shared by every trainer::

        warm-up  (step + 1) / warmup                       for step < warmup
        decay    p = (step - warmup) / (total - warmup)    then 0.5 (1 + cos(pi p))  ("cosine"),
                                                           max(0, 1 - p)  ("linear"), or 1  ("constant")

    The warm-up reaches the full rate at step ``warmup - 1`` and never trains at rate 0.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if decay == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if decay == "linear":
        return max(0.0, 1 - progress)
    if decay == "constant":
        return 1.0
    raise ValueError(f"decay must be 'cosine', 'linear' or 'constant', got {decay!r}.")


def check_config(config, positive=(), non_negative=(), unit_interval=()) -> None:
    """Refuse a wrong config field when the config is built, with a message that names it.

    Types come from the dataclass's annotations: a ``bool`` field takes only True or False (not
    "no"), an ``int`` field an integer (not 2.5, not "3"), a ``float`` field a finite number, and
    ``X | None`` also None. Then ranges: the fields named in ``positive`` must be > 0, in
    ``non_negative`` >= 0, in ``unit_interval`` within [0, 1]. Three names carry limits of their own
    in every config: ``seed`` (see :func:`check_seed`), ``beta`` (0, where allowed, or within
    :data:`BETA_RANGE`) and any ``*learning_rate`` (at least :data:`MIN_LEARNING_RATE`).
    """
    for field in dataclasses.fields(config):
        value, kind = getattr(config, field.name), str(field.type).replace(" ", "")
        if value is None and kind.endswith("|None"):
            continue
        kind = kind.split("|")[0]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {"bool": isinstance(value, bool), "int": number and isinstance(value, int),
              "float": number and math.isfinite(value), "str": isinstance(value, str)}.get(kind, True)
        if not ok:
            wanted = {"bool": "True or False", "int": "an integer", "float": "a finite number",
                      "str": "a string"}[kind]
            raise ValueError(f"{field.name} must be {wanted}, got {shorten(value)}.")
    kinds = {field.name: str(field.type) for field in dataclasses.fields(config)}
    for names, bound, fails in ((positive, "> 0", lambda v: v <= 0), (non_negative, ">= 0", lambda v: v < 0),
                                (unit_interval, "in [0, 1]", lambda v: not 0 <= v <= 1)):
        for name in names:
            value = getattr(config, name)
            if value is not None and fails(value):
                kind = "an integer" if kinds[name] == "int" else "a number"
                raise ValueError(f"{name} must be {kind} {bound}, got {value!r}.")
    if "seed" in kinds:
        check_seed(config.seed)
    beta = getattr(config, "beta", None)
    if "beta" in kinds and beta and not BETA_RANGE[0] <= beta <= BETA_RANGE[1]:
        raise ValueError(f"beta must be between {BETA_RANGE[0]:g} and {BETA_RANGE[1]:g}, got {beta!r}: "
                         "below, the optimum pi* is already the best answer alone and the numbers "
                         "underflow; above, pi* is the reference model itself. Try 0.1 (strong pull to the "
                         "reward) to 1.")
    for name in kinds:
        rate = getattr(config, name)
        if name.endswith("learning_rate") and rate is not None and 0 < rate < MIN_LEARNING_RATE:
            raise ValueError(f"{name} must be at least {MIN_LEARNING_RATE:g}, got {rate!r}: an optimiser "
                             "step that small changes no weight, so training would silently do nothing. Try "
                             "1e-4 to 3e-3 for this tiny model.")


def check_finite_loss(loss: torch.Tensor, step: int) -> None:
    """Stop training with a clear message when the loss is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"The loss became {loss.item()} at step {step}. Lower the learning rate, or check the "
            "data for empty responses; the model saved before this step is unchanged."
        )


def clip_grad_norm(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients of every parameter ``optimizer`` updates to a total norm of at most
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_``). Returns the norm before clipping.

    Why the optimizer's parameters, not ``model.parameters()``: its groups are lists made once,
    while ``model.parameters()`` walks every module again at each call.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


# ---------------------------------------------------------------------------------------------
# Checkpoints: saved so that no file is lost, whatever stops the save
# ---------------------------------------------------------------------------------------------

CHECKPOINT_INFO = "minirlhf.json"
"""The small JSON file minirlhf writes beside a checkpoint's weights: its ``kind`` (``causal_lm`` or
``reward_model``), the fingerprint of its tokenizer, and the ``files`` the save wrote."""

LEGACY_CHECKPOINT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json", "special_tokens_map.json", "reward_model.json",
                           "sft_history.json"}
"""What a checkpoint saved before minirlhf wrote :data:`CHECKPOINT_INFO` may hold."""


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute without following links, so that ``.`` and ``..`` get a real name."""
    return Path(os.path.abspath(path))


def _old(path: Path) -> Path:
    """Where a save puts the previous checkpoint for a moment: the hidden ``.name.old`` beside it."""
    return path.with_name(f".{path.name}.old")


def read_json_file(file: str | Path, max_bytes: int = 1_000_000, fix: str = "") -> object:
    """The JSON content of a small ``file`` that minirlhf reads (a config, a record of what it wrote),
    refused with a message naming the file and ``fix`` when it is larger than ``max_bytes``, not
    UTF-8 JSON, or nested too deep to read."""
    file = Path(file)
    size = file.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{file} is {size:,} bytes, more than the {max_bytes:,} such a file ever needs: it "
                         f"is not one minirlhf wrote, or it is damaged. {fix}".strip())
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        reason = "nested too deep" if isinstance(error, RecursionError) else shorten(str(error), 200)
        raise ValueError(f"{file} is damaged ({reason}). {fix}".strip()) from error


def read_checkpoint_info(path: str | Path) -> dict | None:
    """The content of ``path``'s :data:`CHECKPOINT_INFO`, or None for a checkpoint saved without it."""
    file = Path(path) / CHECKPOINT_INFO
    if not file.is_file():
        return None
    info = read_json_file(file, fix="Copy the whole checkpoint folder again, or save the model over it "
                                    "again.")
    if not isinstance(info, dict):
        raise ValueError(f"{file} is damaged (not a JSON object). Copy the whole checkpoint folder again, or "
                         "save the model over it again.")
    return info


def files_not_written_by_minirlhf(path: Path) -> list[str]:
    """The names in folder ``path`` that are not part of a minirlhf checkpoint (all of them, sorted,
    when ``path`` is not one): a save must not replace such a folder.

    A checkpoint's own files are the usual checkpoint names (:data:`LEGACY_CHECKPOINT_FILES`) that its
    :data:`CHECKPOINT_INFO` lists, and any other file it lists with the sha256 the save recorded (so
    that a planted or edited list cannot make a user's file part of a checkpoint). Links and
    subfolders never are."""
    names = sorted(item.name for item in path.iterdir())
    try:
        info = read_checkpoint_info(path) if (path / "config.json").is_file() else None
    except ValueError:  # a damaged minirlhf.json: judge by the file names, as for an older checkpoint
        info = None
    if info is not None:
        listed = {name for name in info.get("files", []) if isinstance(name, str)}
        hashes = info.get("sha256") if isinstance(info.get("sha256"), dict) else {}
    elif (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        listed, hashes = set(LEGACY_CHECKPOINT_FILES), {}
    else:
        return names

    def ours(name: str) -> bool:
        if not _is_plain_file(path / name):
            return False
        if name == CHECKPOINT_INFO or (name in LEGACY_CHECKPOINT_FILES and name in listed):
            return True
        return name in listed and hashes.get(name) == sha256_of(path / name)

    return [name for name in names if not ours(name)]


def check_writable(folder: str | Path) -> None:
    """Refuse, before any training, a ``folder`` that cannot be made or written into."""
    existing = _absolute(folder)
    while not existing.exists():  # the folder is made later: its nearest existing parent must be writable
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"Cannot make the folder {str(folder)!r}: {existing} is a file. Choose "
                                 "another output folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write into {existing}: choose an output folder you may write to, "
                              "or make this one writable (chmod u+w).")


def check_save_target(path: str | Path) -> Path:
    """Refuse, before any work, to save a checkpoint where a file would be lost; returns the absolute path.

    ``path`` may be new, an empty folder, or a minirlhf checkpoint (which the save replaces). A file,
    a link, a folder holding files minirlhf did not write, or the folder you are in are refused with
    what to do instead.
    """
    given, path = str(path), _absolute(path)
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
    path = _absolute(path)
    if not path.exists() and (_old(path) / "config.json").is_file():
        os.replace(_old(path), path)


def _only_checkpoint_files(folder: Path) -> bool:
    """Whether ``folder`` (not a link) holds nothing but files with checkpoint names: what a killed
    save leaves, and nothing of the user's."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    return all(_is_plain_file(item) and item.name in LEGACY_CHECKPOINT_FILES | {CHECKPOINT_INFO}
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


# ---------------------------------------------------------------------------------------------
# Output folders: minirlhf changes only what it wrote, never through a link
# ---------------------------------------------------------------------------------------------

MIN_FREE_BYTES = 20_000_000
"""Free disk space an output folder needs before any training starts (a demo writes about 5 MB)."""


def is_disk_full(error: BaseException) -> bool:
    """True for the error of a write that found the disk (or the user's quota) full."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: OSError, where: str | Path) -> OSError:
    """The error of a full disk, saying what to do (raise it ``from`` the original)."""
    return OSError(error.errno, f"The disk is full: could not finish writing {where}. Free some space (or "
                                "choose an output folder on another disk) and run again; files written "
                                "before, such as an earlier checkpoint, are unchanged.")


def check_free_space(folder: str | Path, needed: int = MIN_FREE_BYTES) -> None:
    """Refuse, before any training, an output ``folder`` on a disk with less than ``needed`` bytes free."""
    existing = _absolute(folder)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"Only {free / 1e6:.1f} MB are free on the disk of {existing}; minirlhf "
                                    f"needs about {needed / 1e6:.0f} MB there. Free some space, or choose an "
                                    "output folder on another disk.")


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_plain_file(path: Path) -> bool:
    """A regular file, not a link (to anything) and not a folder."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class BusyError(RuntimeError):
    """Another minirlhf run is writing the same place (see :class:`RunLock`)."""


class RunLock:
    """A lock file that keeps two minirlhf runs from writing the same place at once.

    ``with RunLock(file, what):`` holds an exclusive ``flock`` on ``file`` (created if needed, never
    through a link) and writes the process id into it; a second run refuses at once with a message
    naming that process. The lock dies with its process, so a killed run never blocks the next one.
    The file is removed on exit. Where ``fcntl`` is missing (Windows), the file's existence is the lock.
    """

    def __init__(self, file: str | Path, what: str):
        self.file, self.what, self.fd = Path(file), what, None

    def _refuse(self) -> None:
        try:
            owner = self.file.read_text(encoding="utf-8", errors="replace").strip()[:100] or "unknown"
        except OSError:
            owner = "unknown"
        raise BusyError(f"Another minirlhf run ({owner}) is writing {self.what} right now. Wait until it "
                           "ends, or choose another output folder. (If no such run is going on, delete "
                           f"{self.file}.)")

    def __enter__(self) -> RunLock:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (0 if fcntl else os.O_EXCL)
        for _ in range(3):
            try:
                fd = os.open(self.file, flags, 0o644)
            except FileExistsError:
                self._refuse()
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise FileExistsError(f"{self.file} is a link: minirlhf does not write through links. "
                                          "Remove it, or choose another output folder.") from error
                raise
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse()
            try:  # the file we locked must still be the one at that name (a run ending removes it)
                same = os.path.samestat(os.fstat(fd), os.lstat(self.file))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            self._refuse()
        content = os.pread(fd, 200, 0) if hasattr(os, "pread") else b""
        if content and not content.startswith(b"process "):
            os.close(fd)
            raise FileExistsError(f"{self.file} exists and is not a lock minirlhf made: it stays as it is. "
                                  "Move it away, or choose another output folder.")
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.file)  # before unlocking: a waiting run then finds the name gone and retries
        os.close(self.fd)
        self.fd = None


class OwnedFolder:
    """A folder minirlhf writes files into, with a record of what it wrote there.

    The record (the JSON file ``record`` in the folder) lists each file minirlhf wrote and its sha256.
    The folder must be new, empty, or hold only files of the record, unchanged since: a file edited,
    replaced, or turned into a link since then is the user's. Anything else is refused by
    :meth:`check` (before any work), and the folder itself may not be a link. Files are written
    whole or not at all: into a new hidden file beside their final name (created exclusively, so
    never through a link), then renamed over it; the record follows after each file. Only a file of
    the record can be replaced or removed, and only names that ``may_write`` accepts.

    ``subfolders``: names of folders inside that another check vouches for (a checkpoint folder,
    see :func:`check_save_target`), with what killed saves of them leave beside them.
    """

    LOCK = ".minirlhf.lock"

    def __init__(self, path: str | Path, record: str, may_write, what: str, subfolders: tuple[str, ...] = (),
                 info: dict | None = None):
        self.path, self.record, self.may_write, self.what = Path(path), record, may_write, what
        self.subfolders, self.info = subfolders, dict(info or {})
        self.hashes: dict[str, str] = {}
        self.written: set[str] = set()  # the files written since open()
        self._stat = None

    # --- what is there ---------------------------------------------------------------------------
    def _leftover(self, name: str) -> bool:
        """A hidden temporary file that a killed write of this folder left (``.NAME.tmp-XXXXXXXX``, as
        ``tempfile.mkstemp`` names it)."""
        match = re.fullmatch(r"\.(.+)\.tmp-[a-z0-9_]{8}", name)
        return match is not None and (match.group(1) == self.record or self.may_write(match.group(1)))

    def _subfolder_item(self, name: str) -> bool:
        """A checkpoint subfolder or what its killed saves left (checked by the save itself)."""
        for sub in self.subfolders:
            if name == sub or name == f".{sub}.old" or name.startswith(f".{sub}.tmp-"):
                return (self.path / name).is_dir() and not (self.path / name).is_symlink()
        return False

    def read_record(self) -> dict[str, str]:
        """``{name: sha256}`` of the files the record lists (empty without a record)."""
        file = self.path / self.record
        if not os.path.lexists(file):
            return {}
        fix = "Move the folder away, or choose another output folder."
        if not _is_plain_file(file):
            raise FileExistsError(f"{file} is not a file minirlhf wrote (a link or a folder). {fix}")
        content = read_json_file(file, fix=fix)
        hashes = content.get("sha256") if isinstance(content, dict) else None
        if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
            raise ValueError(f"{file} does not say which files minirlhf wrote with their checksums (it is "
                             f"damaged, or written by an older minirlhf). {fix}")
        return {name: digest for name, digest in hashes.items()
                if isinstance(name, str) and "/" not in name and self.may_write(name)}

    def check(self) -> OwnedFolder:
        """Refuse, naming them, a link, a file in place of the folder, and every file in the folder
        that minirlhf did not write (or that changed since). Returns ``self``."""
        given = str(self.path)
        if self.path.is_symlink():
            raise FileExistsError(f"{given!r} is a link: minirlhf does not write through links. Give the "
                                  "folder's real path, or a new folder.")
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{given!r} is a file, not a folder: choose another output folder.")
        check_writable(self.path)
        if not self.path.is_dir():
            self.hashes = {}
            return self
        hashes = self.read_record()
        foreign = []
        for item in sorted(self.path.iterdir(), key=lambda p: p.name):
            name = item.name
            if name in (self.record, self.LOCK) or self._leftover(name) or self._subfolder_item(name):
                continue
            if name not in hashes or not _is_plain_file(item) or sha256_of(item) != hashes[name]:
                foreign.append(name)
        if foreign:
            listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise FileExistsError(
                f"{given!r} holds files minirlhf did not write, or changed since ({listed}). minirlhf never "
                f"replaces or deletes such files: choose a new or empty folder for {self.what}, or move "
                "those files away.")
        self.hashes = {name: digest for name, digest in hashes.items() if (self.path / name).exists()}
        return self

    # --- writing -------------------------------------------------------------------------------
    def open(self) -> OwnedFolder:
        """:meth:`check`, make the folder, remove leftovers of killed writes. Returns ``self``."""
        self.check()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError as error:  # a file or a link appeared meanwhile
            raise FileExistsError(f"{str(self.path)!r} is not a folder: choose another output "
                                  "folder.") from error
        self._stat = os.lstat(self.path)
        for item in self.path.iterdir():
            if self._leftover(item.name) and _is_plain_file(item):
                item.unlink()
        return self

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` made the folder ready for writing."""
        return self._stat is not None

    def lock(self) -> RunLock:
        """The lock that keeps a second run out of this folder (see :class:`RunLock`)."""
        return RunLock(self.path / self.LOCK, f"into {str(self.path)!r}")

    def _still_the_folder(self) -> None:
        if self._stat is None:
            raise RuntimeError("Call open() before writing into the folder.")
        now = os.lstat(self.path)
        if not (stat.S_ISDIR(now.st_mode) and os.path.samestat(now, self._stat)):
            raise FileExistsError(f"{str(self.path)!r} was replaced while minirlhf wrote into it (by a link "
                                  "or another folder): stopped, nothing written through it.")

    def _owns(self, name: str) -> bool:
        target = self.path / name
        return name in self.hashes and _is_plain_file(target) and sha256_of(target) == self.hashes[name]

    def write_with(self, name: str, writer) -> Path:
        """Write the file ``name`` by calling ``writer(path)`` on a new hidden file, then rename it into
        place. ``name`` must be one ``may_write`` accepts, and new or a file of the record."""
        if "/" in name or name.startswith(".") or not self.may_write(name):
            raise ValueError(f"minirlhf does not write a file named {name!r} into {self.what}.")
        self._still_the_folder()
        target = self.path / name
        if os.path.lexists(target) and not self._owns(name):
            raise FileExistsError(f"{target} is not a file minirlhf wrote (or it changed since): minirlhf "
                                  "does not replace it. Move it away and run again.")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=self.path)  # O_EXCL: never through a link
        os.close(fd)
        tmp = Path(tmp)
        try:
            made = os.lstat(tmp)
            writer(tmp)
            if not os.path.samestat(os.lstat(tmp), made):
                raise FileExistsError(f"{tmp} was replaced while minirlhf wrote it: stopped.")
            tmp.chmod(0o644)
            digest = sha256_of(tmp)
            self._still_the_folder()
            os.replace(tmp, target)  # replaces the name itself: never writes through a link there
            self.hashes[name] = digest
            self.written.add(name)
            self._save_record()
        except BaseException as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if is_disk_full(error):
                raise disk_full(error, target) from error
            raise
        return target

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` as the file ``name`` (see :meth:`write_with`)."""
        return self.write_with(name, lambda path: path.write_bytes(data))

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` (UTF-8) as the file ``name`` (see :meth:`write_with`)."""
        return self.write_bytes(name, text.encode("utf-8"))

    def read_bytes(self, name: str) -> bytes:
        """The bytes of a file minirlhf wrote here (refused for any other file)."""
        if not self._owns(name):
            raise FileExistsError(f"{self.path / name} is not a file minirlhf wrote (or it changed since).")
        return (self.path / name).read_bytes()

    def remove(self, name: str) -> None:
        """Delete the file ``name`` if the record lists it unchanged; any other file stays."""
        self._still_the_folder()
        if self._owns(name):
            (self.path / name).unlink()
        self.written.discard(name)
        if name in self.hashes:
            del self.hashes[name]
            self._save_record()

    def _save_record(self) -> None:
        content = {"written_by": f"minirlhf ({self.what})", **self.info, "files": sorted(self.hashes),
                   "sha256": dict(sorted(self.hashes.items()))}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.record}.tmp-", dir=self.path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(json.dumps(content, indent=2) + "\n")
            os.chmod(tmp, 0o644)
            record = self.path / self.record
            if os.path.lexists(record) and not _is_plain_file(record):
                raise FileExistsError(f"{record} is not a file minirlhf wrote: stopped.")
            os.replace(tmp, record)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if is_disk_full(error):
                raise disk_full(error, self.path / self.record) from error
            raise


@contextlib.contextmanager
def no_transformers_progress_bars():
    """Silence transformers' per-file progress bars ("Loading weights", "Writing model shards")
    while loading or saving a 28-tensor model, where they are noise; restores the setting after."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def json_safe(metrics: dict) -> dict:
    """``metrics`` with every NaN or infinite float replaced by None: JSON has no NaN."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
