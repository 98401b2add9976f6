"""Files on disk, written safely: plain files, checksums, free space, a full disk, one run at a time.

What :mod:`minirlhf.folders` and :mod:`minirlhf.checkpoint_files` build on: a plain file (never a
link), a file's sha256, a small JSON file read with a size limit, an output folder refused before
any training when it cannot be written or its disk is nearly full, the message of a full disk, and
:class:`RunLock`, which keeps two runs from writing the same place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from minirlhf.checks import shorten

try:  # POSIX only: on Windows a run lock falls back to an exclusive create
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def absolute_path(path: str | Path) -> Path:
    """``path`` made absolute without following links, so that ``.`` and ``..`` get a real name."""
    return Path(os.path.abspath(path))


def is_plain_file(path: Path) -> bool:
    """A regular file, not a link (to anything) and not a folder."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def check_writable(folder: str | Path) -> None:
    """Refuse, before any training, a ``folder`` that cannot be made or written into."""
    existing = absolute_path(folder)
    while not existing.exists():  # the folder is made later: its nearest existing parent must be writable
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"Cannot make the folder {str(folder)!r}: {existing} is a file. Choose "
                                 "another output folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write into {existing}: choose an output folder you may write to, "
                              "or make this one writable (chmod u+w).")


MIN_FREE_BYTES = 20_000_000
"""Free disk space an output folder needs before any training starts (a demo writes about 5 MB)."""


def check_free_space(folder: str | Path, needed: int = MIN_FREE_BYTES) -> None:
    """Refuse, before any training, an output ``folder`` on a disk with less than ``needed`` bytes free."""
    existing = absolute_path(folder)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"Only {free / 1e6:.1f} MB are free on the disk of {existing}; minirlhf "
                                    f"needs about {needed / 1e6:.0f} MB there. Free some space, or choose an "
                                    "output folder on another disk.")


def is_disk_full(error: BaseException) -> bool:
    """True for the error of a write that found the disk (or the user's quota) full."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: OSError, where: str | Path) -> OSError:
    """The error of a full disk, saying what to do (raise it ``from`` the original)."""
    return OSError(error.errno, f"The disk is full: could not finish writing {where}. Free some space (or "
                                "choose an output folder on another disk) and run again; files written "
                                "before, such as an earlier checkpoint, are unchanged.")


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
