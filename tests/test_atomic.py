"""kd_pyserini.atomic: nothing half-written under a final name, no temporary file left behind, the umask respected."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kd_pyserini import atomic


def test_a_failing_close_leaves_neither_the_file_nor_the_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "run.txt"
    with pytest.raises(OSError, match="No space left"):
        with atomic.atomic_write(target) as f:
            f.write("1 Q0 d 1 1.0 t\n")

            def full_disk_close(_real=f.close):
                _real()
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(f, "close", full_disk_close)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the hidden temporary file is gone too


def test_an_exception_inside_the_block_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "run.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic.atomic_write(target) as f:
            f.write("new, half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["run.txt"]


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_and_folders_follow_the_umask(tmp_path: Path, umask: int, file_mode: int, dir_mode: int):
    old = os.umask(umask)
    try:
        with atomic.atomic_write(tmp_path / "out.txt") as f:
            f.write("x")
        tmp = atomic.temp_dir_for(tmp_path / "index")
        (tmp / "index").write_bytes(b"x")
        atomic.replace_dir(tmp, tmp_path / "index")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "index").stat().st_mode) == dir_mode



# ------------------------------------------------------------------ the other base-layer plumbing: locks, lazy names

class _Busy(Exception):
    pass


def test_process_lock_refuses_a_second_holder_naming_the_first_pid(tmp_path: Path):
    """One file lock for every writer (kd_pyserini.locks): a second holder, even in this process, fails at once with
    the caller's own error built from the holder's pid; the pid is in the file while the lock is held."""
    from kd_pyserini.locks import ProcessLock

    path = tmp_path / "sub" / "out.lock"
    with ProcessLock(path, lambda pid: _Busy(f"held by pid {pid}")) as first:
        assert first.held and path.read_text().strip() == str(os.getpid())
        with pytest.raises(_Busy, match=f"held by pid {os.getpid()}$"):
            ProcessLock(path, lambda pid: _Busy(f"held by pid {pid}")).acquire()
    assert path.exists() and not first.held  # remove=False: the (unlocked, harmless) file stays
    again = ProcessLock(path, _Busy).acquire()  # a released lock can be taken again
    again.close()


def test_process_lock_remove_deletes_the_file_and_a_waiter_locks_the_new_one(tmp_path: Path):
    from kd_pyserini.locks import ProcessLock

    path = tmp_path / "RUN.lock"
    lock = ProcessLock(path, _Busy, remove=True).acquire()
    stale_fd = os.open(path, os.O_RDWR)  # a waiter that opened the file before the holder removed it
    lock.release()
    assert not path.exists()
    os.close(stale_fd)
    with ProcessLock(path, _Busy, remove=True) as second:
        assert second.held and path.exists()
    assert not path.exists()


def test_a_lock_of_a_killed_process_does_not_block(tmp_path: Path):
    """flock locks die with their process: a lock file left by a killed holder is no stale lock."""
    import subprocess
    import sys

    from kd_pyserini.locks import ProcessLock

    path = tmp_path / ".lock"
    code = ("import os, sys; from kd_pyserini.locks import ProcessLock; "
            f"ProcessLock({str(path)!r}, RuntimeError).acquire(); os._exit(137)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 137
    assert path.exists()
    ProcessLock(path, _Busy).acquire().release()


def test_lazy_exports_import_on_first_access():
    import types

    from kd_pyserini.lazy import lazy_exports

    get = lazy_exports("pkg", {"dumps": "json"})
    import json

    assert get("dumps") is json.dumps
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'loads'"):
        get("loads")
    import kd_pyserini.teacher as teacher

    assert isinstance(teacher, types.ModuleType) and teacher.TeacherSpec.__module__ == "kd_pyserini.encoding.scorers"
