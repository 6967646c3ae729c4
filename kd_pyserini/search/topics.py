"""Topics: the queries a search runs, ``{qid: text}``, and where they came from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Topics", "resolve_topics"]


@dataclass
class Topics:
    """Queries ``{qid: text}`` and where they came from (``name`` for a known topic set, ``path`` for a file)."""

    queries: dict[str, str]
    name: str | None = None
    path: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "num_queries": len(self.queries)}


def resolve_topics(topics: str | os.PathLike | Mapping[str, str] | Topics) -> Topics:
    """Topics from a name (``dl19-passage``, ``scifact``...), a ``qid<TAB>query`` file, or a ``{qid: query}`` dict."""
    if isinstance(topics, Topics):
        return topics
    if isinstance(topics, Mapping):
        return Topics({str(k): str(v) for k, v in topics.items()})
    from kd_pyserini.resources import canonical, get_topics, topics_path

    p = Path(topics).expanduser()
    if p.is_file():
        return Topics(get_topics(p), None, str(p.resolve()))
    bench = canonical(str(topics))
    local = topics_path(str(topics))
    return Topics(get_topics(str(topics)), bench.name if bench else str(topics), str(local) if local else None)
