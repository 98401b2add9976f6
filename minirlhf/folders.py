"""Output folders minirlhf owns: a record of the files it wrote, and writes that replace only those.

The demo's folder (:mod:`minirlhf.pipeline`) and an export's (:mod:`minirlhf.export`) are each an
:class:`OwnedFolder`: minirlhf writes a file whole or not at all, never through a link, and
replaces or deletes only a file that its record lists unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path

from minirlhf.files import (
    RunLock,
    check_writable,
    disk_full,
    is_disk_full,
    is_plain_file,
    read_json_file,
    sha256_of,
)


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
    see :func:`~minirlhf.checkpoint_files.check_save_target`), with what killed saves of them leave
    beside them.
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
        if not is_plain_file(file):
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
            if name not in hashes or not is_plain_file(item) or sha256_of(item) != hashes[name]:
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
            if self._leftover(item.name) and is_plain_file(item):
                item.unlink()
        return self

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` made the folder ready for writing."""
        return self._stat is not None

    def lock(self) -> RunLock:
        """The lock that keeps a second run out of this folder (see :class:`~minirlhf.files.RunLock`)."""
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
        return name in self.hashes and is_plain_file(target) and sha256_of(target) == self.hashes[name]

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
            if os.path.lexists(record) and not is_plain_file(record):
                raise FileExistsError(f"{record} is not a file minirlhf wrote: stopped.")
            os.replace(tmp, record)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if is_disk_full(error):
                raise disk_full(error, self.path / self.record) from error
            raise
