"""What ``kd-search`` writes, as one unit: a run file ``RUN`` and its sidecar ``RUN.json``, under one writer.

* :class:`OutputLock`: an exclusive, non-blocking ``fcntl.flock`` on ``RUN.lock``, held for the whole command, so a
  second ``kd-search`` on the same output stops at once (:class:`OutputBusyError`, naming the holder's pid) instead
  of both writing and both exiting 0 with files from two different runs. The lock file is removed on release (a
  waiter that locked a removed file notices the swap and locks the new one).
* :func:`write_run_and_sidecar`: the run is written under a temporary name (by :func:`kd_pyserini.trec_io.write_run`,
  gzip for ``RUN.gz``), its SHA-256 goes into the sidecar, written under a temporary name too; then the sidecar and
  the run are renamed into place, in that order. Whatever stops it before the first rename leaves the previous pair
  as it was; a kill between the two renames leaves a sidecar whose checksum does not match the run beside it, which
  :func:`kd_pyserini.search.sidecar.read_sidecar` refuses. A run and a sidecar that disagree are never read as a
  pair. Temporary files a killed writer leaves are removed by the next one (under the lock).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kd_pyserini.errors import KdError
from kd_pyserini.search.sidecar import SearchTiming, file_sha256, sidecar_path, write_sidecar
from kd_pyserini.trec_io import write_run

__all__ = ["LOCK_SUFFIX", "OutputBusyError", "OutputLock", "write_run_and_sidecar"]

LOCK_SUFFIX = ".lock"


class OutputBusyError(KdError, OSError):
    """Another process holds the output's lock (the message names its pid and what to do)."""


def _read_pid(fd: int) -> int | None:
    for _ in range(20):  # the holder writes its pid just after locking: give it a moment
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


class OutputLock:
    """Context manager: hold ``OUTPUT.lock`` exclusively (``fcntl.flock``, non-blocking) while writing ``OUTPUT``.

    Raises:
        OutputBusyError: another process holds it.
    """

    def __init__(self, output: str | os.PathLike, command: str = "kd-search"):
        self.output = Path(output)
        self.path = Path(str(output) + LOCK_SUFFIX)
        self.command = command
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise OutputBusyError(
                    f"another {self.command} is writing {self.output} (pid {pid if pid else 'unknown'}); wait for "
                    "it or choose another --output") from None
            try:  # the holder we waited for may have removed the file: lock the one now at the path
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self.fd = fd
        self._remove_leftovers()
        return self

    def _remove_leftovers(self) -> None:
        """Temporary files of an earlier writer of this output that was killed (the lock says none is running)."""
        name = re.escape(self.output.name)
        mine = re.compile(rf"\.?\.{name}\.\d+\.(partial(\.gz)?|sidecar)(\.\w+\.tmp)?|\.{name}\.json\.\w+\.tmp")
        for leftover in self.output.parent.iterdir():
            if mine.fullmatch(leftover.name):
                try:
                    leftover.unlink()
                except OSError:
                    pass

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # still locked: nobody else can be holding this file
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _temp_name(output: Path, what: str) -> Path:
    """A temporary name of this process beside ``output`` that keeps a ``.gz`` ending (so the run is compressed)."""
    gz = ".gz" if what == "partial" and output.name.endswith(".gz") else ""
    return output.with_name(f".{output.name}.{os.getpid()}.{what}{gz}")


def _remove_temp(tmp: Path) -> None:
    """``tmp`` and the temporary files of an atomic write to it cut short (named after it, so only ours)."""
    for p in [tmp, *tmp.parent.glob(glob.escape(f".{tmp.name}.") + "*.tmp")]:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def write_run_and_sidecar(run: Mapping[str, Mapping[str, float]], output: str | os.PathLike,
                          config: Mapping[str, Any], timing: SearchTiming | None = None, *,
                          tag: str = "kd_pyserini", k: int | None = None, msmarco: bool = False) -> Path:
    """Write the run ``output`` (:func:`kd_pyserini.trec_io.write_run`; gzip for ``.gz``) and its sidecar
    ``output.json`` (plain JSON, recording the run's SHA-256) as one unit (see the module docstring): both are
    written under temporary names, then the sidecar and the run are renamed into place, in that order. Whatever
    stops it before the first rename leaves the previous pair as it was.

    Returns:
        ``output``.
    """
    out = Path(output)
    tmp_run, tmp_side = _temp_name(out, "partial"), _temp_name(out, "sidecar")
    try:
        write_run(run, tmp_run, tag=tag, k=k, msmarco=msmarco)
        write_sidecar(out, config, timing, run_sha256=file_sha256(tmp_run), to=tmp_side)
        os.replace(tmp_side, sidecar_path(out))
        os.replace(tmp_run, out)
    finally:
        _remove_temp(tmp_run)
        _remove_temp(tmp_side)
    return out
