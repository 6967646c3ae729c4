"""One writer at a time: the one file lock of kd_pyserini (:class:`ProcessLock`).

Every command that writes something another run of the same command could write at the same time holds a lock
while it writes: ``kd-index`` its output folder (``.DIR.lock`` beside it) and its chunk store
(``DIR.partial/.lock``), ``kd-teacher score`` its work folder (``OUTPUT.parts/.lock``), ``kd-search`` its run file
(``RUN.lock``). They all share these guarantees:

* **exclusive and non-blocking**: an ``fcntl.flock`` on the lock file; a second process (or a second lock object in
  the same process) that finds it held fails at once with the caller's own error, naming the holder's pid when it
  is known (the holder writes its pid into the file just after locking), instead of waiting or writing beside it;
* **no stale locks**: the operating system releases an ``flock`` when its process ends, even by ``kill -9``, so a
  lock file left behind by a killed process never blocks the next run (whatever it still says);
* **removable**: with ``remove=True`` the lock file is deleted on release (so no empty ``.lock`` files stay beside
  the outputs). A waiter that opened the file before it was removed notices that the path now names another file
  (or none) and locks the file that is there, so two processes can never both believe they hold the lock.

It is a small module rather than the ``filelock`` package because the locks above name their holder's pid in their
error messages and must refuse a second holder inside the same process too (``filelock`` locks are re-entrant per
object and thread-local by default).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ProcessLock", "read_holder_pid"]

#: how often a lock is retried when its file was swapped (removed and re-created) while it was being locked.
_SWAP_RETRIES = 20
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def read_holder_pid(fd: int) -> int | None:
    """The pid the holder of the lock file open as ``fd`` wrote into it, ``None`` when it wrote none (yet).

    The holder writes its pid just after locking, so an empty file is read again for up to ~0.2 s."""
    for _ in range(20):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


class ProcessLock:
    """An exclusive, non-blocking ``flock`` on ``path``, held until :meth:`release` (or the end of the process).

    Args:
        path: the lock file (its folder is created).
        busy: builds the error raised when another holder has the lock, from the holder's pid (``None``: unknown).
        remove: delete the lock file on release (see the module docstring for how waiters cope with that).
        record_pid: write this process's pid into the lock file, for the ``busy`` message of the next comer.

    Use it as a context manager, or call :meth:`acquire` and later :meth:`release` (alias :meth:`close`, so that
    ``contextlib.closing`` works too).

    Raises:
        whatever ``busy`` returns, from :meth:`acquire`, when the lock is held elsewhere.
    """

    def __init__(self, path: str | os.PathLike, busy: Callable[[int | None], BaseException], *,
                 remove: bool = False, record_pid: bool = True):
        self.path = Path(path)
        self.busy = busy
        self.remove = remove
        self.record_pid = record_pid
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self.fd is not None

    def acquire(self) -> ProcessLock:
        """Take the lock (at once or not at all); returns ``self``.

        Raises:
            the ``busy`` error: another holder has the lock. OSError: the lock file cannot be opened or locked.
        """
        if self.fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_SWAP_RETRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = read_holder_pid(fd) if e.errno in _BUSY else None
                os.close(fd)
                if e.errno not in _BUSY:
                    raise
                raise self.busy(pid) from None
            try:  # the holder before us may have removed the file after we opened it: lock the file that is there
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover  (20 swaps in a row: processes starting and stopping in a tight loop)
            raise self.busy(None)
        if self.record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (removing the file first when ``remove``: still locked, nobody else holds it)."""
        if self.fd is None:
            return
        if self.remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None

    close = release

    def __enter__(self) -> ProcessLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
