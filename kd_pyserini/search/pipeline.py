"""One search pipeline: :func:`run_search` runs a :class:`~kd_pyserini.search.spec.SearchSpec` and returns a
:class:`RunResult`.

::

    SearchSpec -> first stage (bm25 | dense | hybrid | candidates file)
               -> re-rank stages, in order (a bi-encoder, then any re-ranker kind)
               -> evaluation (when qrels are found)
               -> run + RUN.json, written as one unit under RUN.lock

Every searcher and model of a search is built here, by one function each (:func:`open_bm25`, :func:`open_dense`,
:func:`open_query_encoder`, :func:`open_reranker`; re-rankers through
:func:`kd_pyserini.encoding.rerankers.load_reranker`, by their card's kind); ``kd-search``, the latency probe and the
demo call these, never the constructors. Nothing here prints: the result carries the evaluation rows and the warnings
for the caller to show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kd_pyserini.candidates import Candidates
from kd_pyserini.errors import UsageError
from kd_pyserini.search.bm25 import BM25_DEFAULT, Bm25Searcher, bm25_candidates
from kd_pyserini.search.cross_rerank import cross_rerank
from kd_pyserini.search.dense import DenseSearcher, QueryEncoding, check_max_length, resolve_query_encoding
from kd_pyserini.search.hybrid import fuse_searchers
from kd_pyserini.search.output import OutputLock, write_run_and_sidecar
from kd_pyserini.search.rerank import read_candidates, rerank
from kd_pyserini.search.sidecar import (SearchTiming, evaluate_run, index_provenance, measures_for,
                                        missing_query_messages, qrels_for, sidecar_path)
from kd_pyserini.search.spec import SPEC_KEY, Bm25Stage, DenseStage, Encoding, RerankStage, SearchSpec
from kd_pyserini.search.topics import Topics, resolve_topics
from kd_pyserini.trec_io import Run

__all__ = ["RunResult", "run_search", "open_bm25", "open_dense", "open_query_encoder", "open_reranker",
           "first_stage_texts"]

#: the name a bi-encoder stage that is not the last one is evaluated and recorded under (BM25 -> BERT_Dot -> ...).
BI_ENCODER_STAGE = "bert_dot"


@dataclass
class RunResult:
    """What :func:`run_search` produced.

    Attributes:
        spec: the spec that ran.
        run: the output run ``{qid: {docid: score}}`` (as written).
        output / sidecar: the files written.
        stages: intermediate runs by name (hybrid: ``bm25`` and ``dense``; ``bert_dot`` before a re-ranker).
        before: the first stage's candidates over the queries asked for (re-ranking only).
        evaluation: what the sidecar records under ``evaluation`` (``None``: not evaluated).
        eval_rows: ``(label, {measure: value})`` in the order a report shows them (before, stages, after).
        warnings: judged queries without results and the like (one line each).
        notes: e.g. that no qrels were found.
        timing: queries, search seconds (models loaded), elapsed seconds (the whole call).
    """

    spec: SearchSpec
    run: Run
    output: Path
    sidecar: Path
    stages: dict[str, Run] = field(default_factory=dict)
    before: Run | None = None
    evaluation: dict[str, Any] | None = None
    eval_rows: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timing: SearchTiming | None = None


# ------------------------------------------------------------------------------------------ the one place to build

def open_bm25(stage: Bm25Stage, threads: int | None = None) -> Bm25Searcher:
    """The BM25 searcher of a :class:`~kd_pyserini.search.spec.Bm25Stage` (Lucene; the JVM starts here)."""
    return Bm25Searcher(stage.index, k1=stage.k1, b=stage.b, threads=threads or 1)


def open_dense(stage: DenseStage, encoding: Encoding = Encoding(), threads: int | None = None) -> DenseSearcher:
    """The dense searcher of a :class:`~kd_pyserini.search.spec.DenseStage`: its encoder and FAISS index, held open."""
    return DenseSearcher(stage.index, stage.encoder, threads=threads, query_max_length=encoding.query_max_length,
                         ef_search=stage.ef_search, nprobe=stage.nprobe, rescore=stage.rescore,
                         allow_encoder_mismatch=stage.allow_encoder_mismatch, **encoding.kwargs())


def open_query_encoder(model: str, encoding: Encoding = Encoding()) -> QueryEncoding:
    """A bi-encoder re-rank stage's model; its passage truncation is checked against the model's positions."""
    query = resolve_query_encoding(model, query_max_length=encoding.query_max_length, **encoding.kwargs())
    check_max_length(query.encoder, encoding.passage_max_length, "passage")
    return query


#: re-ranker card kinds whose passage side a ``kd-index passage-store`` can hold.
STORE_KINDS = ("late-interaction", "split")


def open_reranker(model: str, encoding: Encoding = Encoding(), progress: bool | None = None,
                  passage_store: str | None = None) -> Any:
    """A re-ranker of any kind (cross-encoder, late-interaction, split), built by its card's kind through
    :func:`kd_pyserini.encoding.rerankers.load_reranker`; int8 applies to bi-encoders only (re-rankers run fp32).

    Args:
        passage_store: a passage store folder of this re-ranker (ColBERT / PreTTR only).

    Raises:
        UsageError: a passage store for a kind that has none, or one built by another model (one line each).
    """
    from kd_pyserini.cards import get_reranker_card
    from kd_pyserini.encoding.cross_encoder import CROSS_PRECISIONS
    from kd_pyserini.encoding.rerankers import load_reranker
    from kd_pyserini.encoding.stored_passages import PassageStoreError
    from kd_pyserini.progress import quiet_third_party

    precision = encoding.precision if encoding.precision in CROSS_PRECISIONS else "fp32"
    card = get_reranker_card(model)
    if passage_store and card.kind not in STORE_KINDS:
        raise UsageError(f"--passage-store {passage_store}: {card.name} is a {card.kind} re-ranker, which reads query "
                         "and passage together and has no passage side to store; drop --passage-store (it serves "
                         "ColBERT and PreTTR re-rankers)")
    try:
        with quiet_third_party(progress):
            return load_reranker(card, device=encoding.device, precision=precision, batch_size=encoding.batch_size,
                                 store=passage_store or None)
    except PassageStoreError as e:
        raise UsageError(f"--passage-store: {e}") from None


def first_stage_texts(run: Run, corpus: str | None, bm25: Bm25Searcher | None, stage: str) -> dict[str, str]:
    """Passage texts of a dense/hybrid first stage: from ``corpus``, else the Lucene index's raw documents.

    Raises:
        UsageError: no source of text, or candidates without one (one line, naming the fix).
    """
    need = {d for docs in run.values() for d in docs}
    if corpus:
        from kd_pyserini.corpus import load_texts

        texts = load_texts(corpus, need)
    elif bm25 is not None:
        texts = {d: t for d in need if (t := bm25.passage(d)) is not None}
    else:
        raise UsageError(f"--first-stage {stage} has no passage text: give --corpus (the indexed collection) "
                         "or --bm25-index with stored raw documents")
    missing = need - texts.keys()
    if missing:
        raise UsageError(f"no passage text for {len(missing)} {stage} candidates (e.g. {sorted(missing)[0]!r}); "
                         "give the --corpus the index was built from")
    return texts


# ------------------------------------------------------------------------------------------------------ the pipeline

def run_search(spec: SearchSpec, *, lock: bool = True) -> RunResult:
    """Run ``spec``: first stage, re-rank stages, evaluation, then the run and its sidecar written as one unit.

    Args:
        spec: what to search (:class:`~kd_pyserini.search.spec.SearchSpec`, validated when made).
        lock: hold ``OUTPUT.lock`` for the whole search, so that a second writer on the same output stops at once
            (:class:`~kd_pyserini.search.output.OutputBusyError`); ``False`` when the caller holds it.

    Returns:
        The :class:`RunResult`.

    Raises:
        OutputBusyError: another process writes ``spec.output``.
        UsageError / ValueError / OSError: bad inputs, one line each (missing texts, incompatible index...).
    """
    if not lock:
        return _run(spec)
    with OutputLock(spec.output):
        return _run(spec)


@dataclass
class _Loaded:
    """The models and searchers of one search, loaded before the timer starts."""

    bm25: Bm25Searcher | None = None
    dense: DenseSearcher | None = None
    models: list[Any] = field(default_factory=list)  # one per re-rank stage

    @property
    def card(self) -> Any:
        """The bi-encoder card the sidecar describes (the dense stage's, else a bi-encoder stage's)."""
        if self.dense is not None:
            return self.dense.card
        return next((m.card for m in self.models if isinstance(m, QueryEncoding)), None)


def _load(spec: SearchSpec) -> _Loaded:
    loaded = _Loaded()
    models: dict[int, Any] = {}
    for i, stage in enumerate(spec.rerank):  # re-rankers first, then the bi-encoder (a bad model fails early)
        if stage.kind == "reranker":
            models[i] = open_reranker(stage.model, spec.encoding, spec.progress, spec.passage_store)
    for i, stage in enumerate(spec.rerank):
        if stage.kind == "bi-encoder":
            models[i] = open_query_encoder(stage.model, spec.encoding)
    loaded.models = [models[i] for i in range(len(spec.rerank))]
    if spec.first_stage in ("bm25", "hybrid"):
        assert spec.bm25 is not None
        loaded.bm25 = open_bm25(spec.bm25, spec.threads)
    if spec.first_stage in ("dense", "hybrid"):
        assert spec.dense is not None
        loaded.dense = open_dense(spec.dense, spec.encoding, spec.threads)
    return loaded


def _first_stage(spec: SearchSpec, topics: Topics | None, loaded: _Loaded) -> tuple[Run | Candidates, dict[str, Run]]:
    """The first stage's output: a run (nothing re-ranks it) or candidates with their texts; and its components."""
    fs, depth, progress = spec.first_stage, spec.depth, spec.progress
    if fs == "candidates":
        raise AssertionError("candidates are read before the timer starts")
    if fs == "bm25":
        assert loaded.bm25 is not None and spec.bm25 is not None
        if spec.rerank:
            return bm25_candidates(topics, loaded.bm25, depth, progress=progress), {}
        return loaded.bm25.search_batch(topics, depth, progress=progress, remove_query=spec.bm25.remove_query), {}
    assert loaded.dense is not None
    components: dict[str, Run] = {}
    if fs == "dense":
        run = loaded.dense.search_batch(topics, depth, progress=progress)
    else:
        assert spec.fusion is not None and loaded.bm25 is not None
        run, components = fuse_searchers(topics, loaded.dense, loaded.bm25, spec.fusion.method, depth,
                                         spec.fusion.depth, progress=progress, return_components=True,
                                         **spec.fusion.params())
    if not spec.rerank:
        return run, components
    texts = first_stage_texts(run, spec.corpus, loaded.bm25, fs)
    return Candidates(run, texts, {}, {"first_stage": fs, "depth": depth}), {}


def _rerank_stage(stage: RerankStage, model: Any, cands: Candidates, topics: Topics | None, hits: int,
                  spec: SearchSpec) -> Run:
    if stage.kind == "bi-encoder":
        return rerank(topics, model, cands, depth=stage.depth, hits=hits,
                      passage_max_length=spec.encoding.passage_max_length, progress=spec.progress,
                      **spec.encoding.kwargs())
    return cross_rerank(cands, None, model, depth=stage.depth, hits=hits, topics=topics, progress=spec.progress)


def _run(spec: SearchSpec) -> RunResult:
    t0 = time.perf_counter()
    if spec.encoding.precision == "auto" and (spec.dense is not None or spec.rerank):  # once: the sidecar records it
        from kd_pyserini.encoding.precision import resolve_precision

        chosen = resolve_precision("auto", spec.encoding.device, "encode").precision
        spec = replace(spec, encoding=replace(spec.encoding, precision=chosen))
    topics = resolve_topics(spec.topics) if spec.topics else None
    loaded = _load(spec)
    cands_file = read_candidates(spec.candidates, spec.corpus, spec.depth) if spec.first_stage == "candidates" \
        else None
    t_search = time.perf_counter()
    first, components = (cands_file, {}) if cands_file is not None else _first_stage(spec, topics, loaded)
    stages: dict[str, Run] = dict(components)
    before: Run | None = None
    params: dict[str, Any]
    config: dict[str, Any] = {"mode": spec.mode}
    if isinstance(first, Candidates):
        cands = to_rerank = first
        run: Run = {}
        for i, (stage, model) in enumerate(zip(spec.rerank, loaded.models)):
            last = i == len(spec.rerank) - 1
            to_rerank = cands
            run = _rerank_stage(stage, model, cands, topics, spec.output_hits if last else stage.depth, spec)
            if not last:
                stages[BI_ENCODER_STAGE if stage.kind == "bi-encoder" else f"{stage.kind}_{i + 1}"] = run
                cands = Candidates(run, cands.texts, cands.queries, cands.source)
        # "before" over the same queries as "after": the topics asked for (else every query the file carries)
        before = {q: docs for q, docs in first.run.items() if topics is None or q in topics.queries}
        config["candidates"] = first.source
        params = _rerank_params(spec, first, to_rerank, run, loaded)
        reranker = next((m for s, m in zip(spec.rerank, loaded.models) if s.kind == "reranker"), None)
        if reranker is not None:
            config["first_stage"] = spec.first_stage
            config["reranker"] = reranker.describe()
            config["passage_store"] = _store_info(reranker)
    else:
        run = first
        params = _first_stage_params(spec)
    search_s = time.perf_counter() - t_search
    config["params"] = params

    result = RunResult(spec, run, Path(spec.output), sidecar_path(spec.output), stages=stages, before=before)
    if spec.evaluate:
        _evaluate(spec, topics, result)
    card = loaded.card
    described = card.describe() if card is not None else None
    enc = spec.encoding
    timing = SearchTiming(len(run), search_s, time.perf_counter() - t0)
    result.output = write_run_and_sidecar(run, spec.output, {
        **config,
        "run_tag": spec.tag,
        "format": "msmarco" if spec.msmarco_format else "trec",
        "topics": topics.describe() if topics else None,
        "encoder": described,
        "query_max_length": enc.query_max_length or (described or {}).get("query_max_length"),
        "encoding": {"batch_size": enc.batch_size, "device": enc.device, "precision": enc.precision}
        if described else None,
        "index": index_provenance(spec.dense.index) if spec.dense is not None and spec.mode != "bm25" else None,
        "bm25_index": index_provenance(spec.bm25.index) if spec.bm25 is not None else None,
        "threads": spec.threads,
        "num_queries": len(run),
        "evaluation": result.evaluation,
        SPEC_KEY: spec.to_dict(),
    }, timing, tag=spec.tag, k=spec.hits, msmarco=spec.msmarco_format)
    result.timing = SearchTiming(len(run), search_s, time.perf_counter() - t0)
    return result


def _store_info(reranker: Any) -> dict[str, Any] | None:
    """What the sidecar records of a re-ranker's passage store: its folder, its record, and the candidates it missed
    (encoded at search time)."""
    store = getattr(reranker, "store", None)
    if store is None:
        return None
    info = dict(getattr(store, "info", {}) or {})
    return {"path": str(store.path), "passages": info.get("passages"), "dtype": info.get("dtype"),
            "encoder": info.get("encoder"), "misses": int(getattr(reranker, "store_misses", 0))}


def _bm25_params(spec: SearchSpec) -> dict[str, float]:
    bm25 = spec.bm25 or Bm25Stage("", *BM25_DEFAULT)
    return {"k1": bm25.k1, "b": bm25.b}


def _first_stage_params(spec: SearchSpec) -> dict[str, Any]:
    """The sidecar's ``params`` of a search without re-rank stages."""
    if spec.first_stage == "dense":
        assert spec.dense is not None
        return {"hits": spec.hits, "ef_search": spec.dense.ef_search, "nprobe": spec.dense.nprobe,
                "rescore": spec.dense.rescore}
    if spec.first_stage == "bm25":
        assert spec.bm25 is not None
        return {"hits": spec.hits, **_bm25_params(spec), "remove_query": spec.bm25.remove_query}
    assert spec.fusion is not None
    return {"fusion": spec.fusion.method, "hits": spec.hits, "depth": spec.fusion.depth, **spec.fusion.params(),
            **_bm25_params(spec)}


def _rerank_params(spec: SearchSpec, first: Candidates, last_input: Candidates, run: Run,
                   loaded: _Loaded) -> dict[str, Any]:
    """The sidecar's ``params`` of a search with re-rank stages."""
    last = spec.rerank[-1]
    if last.kind == "bi-encoder" and len(spec.rerank) == 1:
        return {"depth": last.depth, "hits": spec.output_hits,
                "passage_max_length": spec.encoding.passage_max_length, **_bm25_params(spec),
                "unique_passages_encoded": len({d for ds in first.run.values() for d in ds})}
    bi = [s.depth for s in spec.rerank[:-1] if s.kind == "bi-encoder"]
    return {"depth": last.depth, "first_stage_depth": spec.depth, "hits": spec.output_hits,
            "bi_encoder_depth": bi[0] if bi else None, **_bm25_params(spec),
            "pairs_scored": sum(min(last.depth, len(d)) for q, d in last_input.run.items() if q in run)}


def _evaluate(spec: SearchSpec, topics: Topics | None, result: RunResult) -> None:
    """Fill ``result``'s evaluation, rows, warnings and notes (when qrels are found)."""
    qt = topics or Topics({})
    qrels, qrels_name = qrels_for(qt, spec.qrels)
    if qrels is None:
        result.notes.append("no qrels found for these topics: not evaluated (give --qrels)")
        return
    measures = measures_for(spec.qrels or qt.name, list(spec.measures) if spec.measures else None)
    evaluation: dict[str, Any] = {"qrels": qrels_name, "measures": measures,
                                  "run": evaluate_run(result.run, qrels, measures)}
    result.warnings.extend(missing_query_messages(result.run, qrels, spec.output))
    rows: list[tuple[str, dict[str, float]]] = []
    if result.before is not None:
        evaluation["candidates"] = evaluate_run(result.before, qrels, measures)
        rows.append(("before", evaluation["candidates"]))
    for name, comp in result.stages.items():  # hybrid's lists; BM25 -> BERT_Dot -> BERT_CAT: the middle stage
        evaluation[name] = evaluate_run(comp, qrels, measures)
        rows.append((name, evaluation[name]))
    if result.before is not None:
        label = "after"
    elif result.stages and spec.fusion is not None:
        label = spec.fusion.method
    else:
        label = spec.mode or spec.first_stage
    rows.append((label, evaluation["run"]))
    result.evaluation, result.eval_rows = evaluation, rows
