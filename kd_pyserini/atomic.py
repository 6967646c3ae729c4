"""Write files and folders so that an interrupted job never leaves a half-made result under the final name.

* :class:`atomic_write`: a file is written under a temporary name in the same folder and renamed on success;
* :func:`replace_dir`: a finished temporary folder is moved to its final name in one rename (an existing folder
  is first moved aside and deleted after the swap).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "replace_dir", "temp_dir_for", "current_umask", "respect_umask"]


def current_umask() -> int:
    """The process's umask (read without changing it for longer than two system calls)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def respect_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (always 0600, folders 0700) the mode a plain ``open``/``mkdir`` would have
    given it under the current umask (e.g. 0644 / 0755 with umask 022), so colleagues can read results."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


class atomic_write:
    """Context manager: write to ``path`` through a temporary file in the same folder, renamed on success."""

    def __init__(self, path: str | os.PathLike, mode: str = "w"):
        self.path = Path(path)
        self.mode = mode

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        respect_umask(self.tmp)
        self.f = os.fdopen(fd, self.mode, **({} if "b" in self.mode else {"encoding": "utf-8"}))
        return self.f

    def __exit__(self, exc_type, exc, tb):
        try:
            self.f.close()  # may fail itself (a full disk flushes here)
            if exc_type is None:
                os.replace(self.tmp, self.path)
                return False
        except BaseException:
            _unlink_quietly(self.tmp)
            raise
        _unlink_quietly(self.tmp)
        return False


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def temp_dir_for(dest: str | os.PathLike, tag: str = "tmp") -> Path:
    """A new empty folder beside ``dest`` (same file system, so the final rename is atomic)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.{tag}-", dir=dest.parent))
    respect_umask(tmp, directory=True)
    return tmp


def replace_dir(tmp: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Put the finished folder ``tmp`` at ``dest`` with one rename; an existing ``dest`` is moved aside first and
    deleted after the swap (so ``dest`` is at every moment either the old or the new folder, never a mix)."""
    tmp, dest = Path(tmp), Path(dest)
    if not dest.exists():
        os.replace(tmp, dest)
        return dest
    trash = temp_dir_for(dest, "old")
    os.replace(dest, trash / "old")
    os.replace(tmp, dest)
    shutil.rmtree(trash, ignore_errors=True)
    return dest
