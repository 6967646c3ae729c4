"""The training log: ``train_log.csv`` (one row per logged step; on resume, rows after the checkpoint are dropped so
the log continues without duplicates) and, optionally, TensorBoard."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

__all__ = ["TrainLog"]

log = logging.getLogger(__name__)


class TrainLog:
    """CSV (+ TensorBoard) writer; a no-op on ranks other than 0 (``main=False``).

    Args:
        path: the CSV file. measures: validation measures (``val_<measure>`` columns).
        tensorboard_dir: also log scalars there (needs the ``tensorboard`` package; a warning when missing).
    """

    def __init__(self, path: Path, measures: list[str] | None = None, main: bool = True,
                 tensorboard_dir: Path | None = None):
        self.path = path
        self.fields = ["step", "epoch", "loss", "lr", "triples_per_s", "elapsed_s"] + \
            [f"val_{m}" for m in (measures or [])]
        self.main = main
        self.tensorboard_dir = tensorboard_dir
        self._file: Any = None
        self._csv: Any = None
        self._tb: Any = None

    def open(self, step: int) -> None:
        """Start (``step`` 0) or continue after ``step`` (keeping the rows up to it)."""
        if not self.main:
            return
        keep: list[dict[str, str]] = []
        if step > 0 and self.path.is_file():  # resuming: drop rows logged after the checkpoint
            with open(self.path, newline="") as f:
                keep = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.fields, extrasaction="ignore")
        self._csv.writeheader()
        self._csv.writerows(keep)
        self._file.flush()
        if self.tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.tensorboard_dir))
            except Exception as e:  # noqa: BLE001  (tensorboard is optional)
                log.warning("--tensorboard ignored: %s (pip install tensorboard)", e)

    def write(self, row: dict[str, Any]) -> None:
        if not self.main or self._csv is None:
            return
        self._csv.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
