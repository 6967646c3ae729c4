"""Lazily read ``id<TAB>text`` files (MS MARCO ``collection.tsv``, ``queries.train.tsv``) and the byte-level line
reading that every training input shares.

:class:`OffsetIndex` keeps one byte offset and length per line in numpy arrays (dense arrays keyed by the integer id
when ids are dense integers, as MS MARCO's are; a sorted id array searched with ``np.searchsorted`` otherwise) and
reads a line by ``os.pread`` when it is needed. The 8.8M-passage collection costs ~180 MB of arrays (built in
seconds) instead of several GB of Python strings.

:func:`open_bytes` / :func:`utf8_error` read any input file (``.gz`` too) as bytes: a UTF-8 byte-order mark at the
start of the file is dropped (not made part of the first id or score), and a line that is not valid UTF-8 is a
:class:`~kd_pyserini.trec_io.FormatError` naming ``file:line`` (not silently turned into U+FFFD).
"""

from __future__ import annotations

import array
import contextlib
import gzip
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from kd_pyserini.trec_io import FormatError

__all__ = ["OffsetIndex", "open_bytes", "utf8_error", "BOM"]

log = logging.getLogger(__name__)
#: the UTF-8 byte-order mark some editors (Notepad, Excel's "CSV UTF-8") put at the start of a file.
BOM = b"\xef\xbb\xbf"


@contextlib.contextmanager
def open_bytes(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int]]:
    """``(file, bom)``: ``path`` (``.gz`` un-gzipped) opened to read lines as bytes, positioned after a UTF-8
    byte-order mark (``bom``: its length in bytes, 0 when there is none; byte offsets of lines start there)."""
    f: Any = gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")
    try:
        bom = len(BOM) if f.peek(len(BOM))[:len(BOM)] == BOM else 0
        f.read(bom)
        yield f, bom
    finally:
        f.close()


def utf8_error(raw: bytes) -> str:
    """What is wrong with a line that is not valid UTF-8 (callers add ``file:line``)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return (f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); save the file as "
                "UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    return "valid UTF-8"


class OffsetIndex:
    """Byte offsets of the lines of an ``id<TAB>text`` tsv file, keyed by id; texts are read on demand.

    Building the index reads the file once (about 30 s for MS MARCO's 8.8M passages). Lookups use ``os.pread``, which
    has no shared file position, so one index can serve several threads.

    Integer ids that are dense (``max id < 2 * lines + 1024``, true of MS MARCO pids and qids) are stored as direct
    arrays (``offsets[id]``); other ids, strings included, as a sorted id array searched by ``np.searchsorted``.

    A ``.gz`` file cannot be read by offset: its texts are held in memory (a warning says so; decompress it to avoid
    that).

    Args:
        path: the tsv file.
        skip_bad: skip (and count in :attr:`skipped`) lines without a tab or not in UTF-8 instead of raising
            ``FormatError``.
    """

    def __init__(self, path: str | os.PathLike, skip_bad: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist (expected an 'id<TAB>text' tsv file such as MS MARCO "
                                    "collection.tsv or queries.train.tsv)")
        self.skipped = 0
        self._texts: dict[str, str] | None = None
        self._fd: int | None = None
        self._dense = False
        if str(self.path).endswith(".gz"):
            log.warning("%s is gzipped, so it cannot be read by byte offset: holding its texts in memory (gunzip it "
                        "to keep memory flat)", self.path)
            self._load_in_memory(skip_bad)
            return
        self._build(skip_bad)
        self._fd = os.open(self.path, os.O_RDONLY)

    # -- building ------------------------------------------------------------------------------------------------

    def _load_in_memory(self, skip_bad: bool) -> None:
        texts: dict[str, str] = {}
        with open_bytes(self.path) as (f, _):
            for no, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    self._bad_line(no, utf8_error(raw), skip_bad)
                    continue
                if not line.strip():
                    continue
                if "\t" not in line:
                    self._bad_line(no, "no tab; expected 'id<TAB>text'", skip_bad)
                    continue
                key, text = line.split("\t", 1)
                texts[key.strip()] = text
        self._texts = texts

    def _bad_line(self, no: int, message: str, skip_bad: bool) -> None:
        if not skip_bad:
            raise FormatError(self.path, no, message)
        self.skipped += 1

    def _build(self, skip_bad: bool) -> None:
        offsets = array.array("q")
        lengths = array.array("l")
        int_ids: array.array | None = array.array("q")
        str_ids: list[bytes] | None = None
        with open_bytes(self.path) as (f, pos):
            for no, line in enumerate(f, 1):
                n = len(line)
                start, pos = pos, pos + n
                if not line.isascii():  # texts are read back later: refuse undecodable bytes now, with file:line
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        self._bad_line(no, utf8_error(line), skip_bad)
                        continue
                tab = line.find(b"\t")
                if tab < 0:
                    if line.strip():
                        self._bad_line(no, "no tab; expected 'id<TAB>text'", skip_bad)
                    continue
                key = line[:tab].strip()
                if int_ids is not None:
                    try:
                        value = int(key)
                        if str(value).encode() != key:  # "007", "+7", "7_0": keep such ids as strings
                            raise ValueError(key)
                        int_ids.append(value)
                    except ValueError:
                        str_ids = [str(i).encode() for i in int_ids]
                        int_ids = None
                if str_ids is not None:
                    str_ids.append(key)
                offsets.append(start + tab + 1)
                lengths.append(n - tab - 1)
        self._offsets = np.frombuffer(offsets, dtype=np.int64).copy() if len(offsets) else np.zeros(0, np.int64)
        self._lengths = np.asarray(lengths, dtype=np.int64).astype(np.int32)
        count = len(self._offsets)
        self._dense = False
        if int_ids is not None:
            ids = np.frombuffer(int_ids, dtype=np.int64) if len(int_ids) else np.zeros(0, np.int64)
            if count and ids.min() >= 0 and ids.max() < 2 * count + 1024:
                slot = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
                slot[ids] = np.arange(count, dtype=np.int64)
                if int((slot >= 0).sum()) != count:
                    self._raise_duplicate(ids.astype(str))
                self._dense, self._slot = True, slot
                return
            keys = ids.astype(str).astype(np.bytes_)
        else:
            keys = np.array(str_ids, dtype=np.bytes_) if str_ids else np.zeros(0, dtype="S1")
        order = np.argsort(keys, kind="stable")
        self._keys, self._key_rows = keys[order], order.astype(np.int64)
        if count > 1 and bool((self._keys[1:] == self._keys[:-1]).any()):
            self._raise_duplicate(keys)

    def _raise_duplicate(self, keys: np.ndarray) -> None:
        seen: set[Any] = set()
        for k in keys:
            if k in seen:
                k = k.decode() if isinstance(k, bytes) else str(k)
                raise ValueError(f"{self.path}: id {k!r} occurs more than once; ids must be unique")
            seen.add(k)

    # -- lookups -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._texts) if self._texts is not None else len(self._offsets)

    def row(self, key: str) -> int:
        """The row of ``key`` (an int usable with :meth:`text_at`), or -1 when the file has no such id."""
        key = key.strip()
        if self._texts is not None:
            raise TypeError("an in-memory (gzipped) index has no rows; use get()")
        if self._dense:
            if not (key.isascii() and key.isdigit()) or (len(key) > 1 and key[0] == "0"):
                return -1
            i = int(key)
            return int(self._slot[i]) if i < len(self._slot) else -1
        k = key.encode()
        j = int(np.searchsorted(self._keys, k))
        if j < len(self._keys) and self._keys[j] == k:
            return int(self._key_rows[j])
        return -1

    def ids(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The id on each of ``rows`` (the inverse of :meth:`row`), read from the lookup arrays in one pass.

        Raises:
            TypeError: an in-memory (gzipped) index, which has no rows.
        """
        if self._texts is not None:
            raise TypeError("an in-memory (gzipped) index has no rows; use get()")
        rows = np.asarray(rows, dtype=np.int64)
        if self._dense:
            held = np.flatnonzero(self._slot >= 0)
            row_id = np.empty(len(held), dtype=np.int64)
            row_id[self._slot[held]] = held
            return [str(x) for x in row_id[rows].tolist()]
        row_key = np.empty(len(self._keys), dtype=self._keys.dtype)
        row_key[self._key_rows] = self._keys
        return [k.decode("utf-8") for k in row_key[rows].tolist()]

    def __contains__(self, key: str) -> bool:
        if self._texts is not None:
            return key.strip() in self._texts
        return self.row(key) >= 0

    def text_at(self, row: int) -> str:
        """The text on row ``row`` (read from disk now)."""
        raw = os.pread(self._fd, int(self._lengths[row]), int(self._offsets[row]))
        return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")

    def get(self, key: str) -> str:
        """The text of ``key``; ``KeyError`` when absent."""
        if self._texts is not None:
            return self._texts[key.strip()]
        r = self.row(key)
        if r < 0:
            raise KeyError(key)
        return self.text_at(r)

    @property
    def integer_ids(self) -> bool:
        """Whether the ids are looked up as integers in a slot table (small non-negative integer ids, e.g. MS
        MARCO's), rather than by binary search over sorted byte strings."""
        return bool(self._dense)

    @property
    def in_memory(self) -> bool:
        return self._texts is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __getstate__(self):  # pickling (e.g. to a worker process) reopens the file there
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._texts is None:
            self._fd = os.open(self.path, os.O_RDONLY)


