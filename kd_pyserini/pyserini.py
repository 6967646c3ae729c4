"""Run any Pyserini command-line module under kd_pyserini's JVM bootstrap, with our encoders registered.

Usage::

    python -m kd_pyserini.pyserini search.faiss --index DIR --topics dl19-passage --encoder distilbert-dot ...
    python -m kd_pyserini.pyserini index.lucene --collection JsonCollection --input DIR --index OUT ...
    python -m kd_pyserini.pyserini eval.trec_eval -c -m ndcg_cut.10 QRELS RUN

The module may be given with or without the ``pyserini.`` prefix. Before it runs, ``--encoder X`` is inspected:
when X is one of our cards (name, alias or hub id) or a local model directory whose architecture does not fit the
class Pyserini's substring match would choose (a path that merely contains ``ance``, ``dpr`` or ``dse``), X itself is
registered first in Pyserini's encoder maps, so it reaches our encoder class.

Topic and qrels names (``--topics dl19-passage``, ``eval.trec_eval ... dl19-passage RUN``; kd's aliases such as
``trec-dl-19`` too) resolve from ``$KD_PYSERINI_DATA/topics-and-qrels`` and Pyserini's cache before any download, on
Pyserini 1.6 and 2.x, and offline (:mod:`kd_pyserini.pyserini_compat`).
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

from kd_pyserini.pyserini_compat.encoders import route_encoder

__all__ = ["route_encoder", "main"]

# Pyserini encoder-class keyword -> the model types that class can load.
def _option(argv: Sequence[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    module = argv[0] if argv[0].startswith("pyserini.") else f"pyserini.{argv[0]}"
    from kd_pyserini.encoders import register_with_pyserini  # imports pyserini: starts the JVM
    from kd_pyserini.pyserini_compat import install_local_topics_and_qrels
    from kd_pyserini.resources import BENCHMARKS

    # kd's aliases as names for Pyserini's CLIs too (one name maps to one file: topics and qrels separately).
    install_local_topics_and_qrels(aliases={a: b.topics_file for b in BENCHMARKS.values() for a in b.aliases})
    install_local_topics_and_qrels(aliases={a: b.qrels_file for b in BENCHMARKS.values() for a in b.aliases})
    encoder = _option(argv[1:], "--encoder")
    register_with_pyserini(extra_keys=[encoder] if encoder and _option(argv[1:], "--encoder-class") is None
                           and route_encoder(encoder) else [])
    sys.argv = [module, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
