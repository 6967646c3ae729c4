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

