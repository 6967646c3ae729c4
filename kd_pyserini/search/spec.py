"""What to search, as one typed value: :class:`SearchSpec` (stages, encoders, indexes, depths, fusion, output).

``kd-search`` parses its options into a spec (:func:`spec_from_options`), :func:`kd_pyserini.search.pipeline.
run_search` runs it; the latency probe (:mod:`kd_pyserini.reproduce.latency`), the demo and the tests build specs
directly. A spec is checked once, when it is made (:meth:`SearchSpec.validate`): an impossible combination raises
:class:`SpecError`, one line naming the option and the fix. The pipeline a spec describes::

    first stage (bm25 | dense | hybrid | candidates file)  ->  re-rank stages, in order  ->  run + RUN.json

A hybrid first stage is a dense and a BM25 list fused by :mod:`kd_pyserini.fusion` (:class:`Fusion`); each re-rank
stage (:class:`RerankStage`) is a bi-encoder (BERT_Dot) or a re-ranker of any kind that
:func:`kd_pyserini.encoding.rerankers.load_reranker` builds (cross-encoder, ...). Every spec is recorded in its run's
sidecar (``RUN.json``, key ``spec``: :meth:`SearchSpec.to_dict`) and read back by :func:`read_spec`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kd_pyserini.errors import UsageError

__all__ = ["MODES", "FIRST_STAGES", "RERANK_KINDS", "SPEC_KEY", "SpecError", "Bm25Stage", "DenseStage", "Fusion",
           "RerankStage", "Encoding", "SearchSpec", "spec_from_options", "encoder_from_index", "read_spec"]

#: what a run is called (the sidecar's ``mode``, the default run tag ``kd_pyserini-MODE``).
MODES = ("dense", "bm25", "rerank", "hybrid")
#: where the candidates come from.
FIRST_STAGES = ("bm25", "dense", "hybrid", "candidates")
#: re-rank stage kinds: a bi-encoder (query and passage vectors) or any re-ranker card kind (load_reranker's table).
RERANK_KINDS = ("bi-encoder", "reranker")
#: the sidecar key holding the spec.
SPEC_KEY = "spec"


class SpecError(UsageError):
    """A :class:`SearchSpec` that cannot run (one line: the option and the fix)."""


@dataclass(frozen=True)
class Bm25Stage:
    """BM25 over a Lucene index (``kd-index bm25`` or any Pyserini index; raw documents give re-rankers their text).

    Args:
        index: the Lucene index folder.
        k1 / b: BM25 parameters (Anserini's defaults 0.9 / 0.4).
        remove_query: drop hits whose docid equals the query id (Pyserini's ``--remove-query``).
    """

    index: str
    k1: float = 0.9
    b: float = 0.4
    remove_query: bool = False


@dataclass(frozen=True)
class DenseStage:
    """A bi-encoder's query vectors searched in a FAISS index folder (``kd-index dense``).

    Args:
        index: the FAISS index folder.
        encoder: card name, hub id or model folder encoding the queries.
        ef_search / nprobe: HNSW / IVF settings (``None``: those saved in the index).
        rescore: re-score each query's top ``rescore`` of an approximate index exactly from the vectors the index
            kept on disk (``kd-index dense --keep-vectors``; :mod:`kd_pyserini.index.rescore`); ``None``: off.
        allow_encoder_mismatch: search an index built with another encoder anyway (with a warning).
    """

    index: str
    encoder: str
    ef_search: int | None = None
    nprobe: int | None = None
    allow_encoder_mismatch: bool = False
    rescore: int | None = None


@dataclass(frozen=True)
class Fusion:
    """How a hybrid first stage fuses its BM25 (first, sparse) and dense lists (:func:`kd_pyserini.fusion.fuse`).

    Args:
        method: interpolation | rrf | combsum | combmnz.
        depth: documents taken from each list per query.
        alpha / normalize / weight_on_dense: interpolation (Pyserini's HybridSearcher).
        rrf_k: rrf's constant (Cormack et al. 2009).
        weights: rrf/combsum/combmnz, one per list.
        norm: combsum/combmnz per-query normalisation.
    """

    method: str = "interpolation"
    depth: int = 1000
    alpha: float = 0.1
    normalize: bool = False
    weight_on_dense: bool = False
    rrf_k: float = 60.0
    weights: tuple[float, ...] | None = None
    norm: str = "minmax"

    def params(self) -> dict[str, Any]:
        """Every parameter but ``method`` and ``depth`` (what :func:`kd_pyserini.search.fuse_searchers` takes)."""
        return {"alpha": self.alpha, "normalize": self.normalize, "weight_on_dense": self.weight_on_dense,
                "rrf_k": self.rrf_k, "weights": list(self.weights) if self.weights is not None else None,
                "norm": self.norm}


@dataclass(frozen=True)
class RerankStage:
    """One re-rank stage: the top ``depth`` of the stage before, re-scored.

    Args:
        kind: ``bi-encoder`` (BERT_Dot: query and passage vectors) or ``reranker`` (a re-ranker card of any kind,
            built by :func:`kd_pyserini.encoding.rerankers.load_reranker`: cross-encoder, ...).
        model: card name, hub id or model folder.
        depth: candidates re-scored per query (and, for a stage that is not the last, documents passed on).
    """

    kind: str
    model: str
    depth: int


@dataclass(frozen=True)
class Encoding:
    """How texts are encoded, for every model of the search.

    Args:
        batch_size: texts per forward pass.
        device: cpu, cuda, cuda:1 (``None``: cuda when present).
        precision: auto | fp32 | fp16 | bf16 | int8 (int8: CPU, the bi-encoder only; re-rankers then run in fp32;
            auto: the fastest faithful one on the device, resolved when the search runs and recorded as resolved;
            :mod:`kd_pyserini.encoding.precision`).
        query_max_length / passage_max_length: truncation in tokens (``None``: the card's).
    """

    batch_size: int = 32
    device: str | None = None
    precision: str = "auto"
    query_max_length: int | None = None
    passage_max_length: int | None = None

    def kwargs(self) -> dict[str, Any]:
        """``batch_size``, ``device``, ``precision``: what the encoders take."""
        return {"batch_size": self.batch_size, "device": self.device, "precision": self.precision}


@dataclass(frozen=True)
class SearchSpec:
    """Everything one search is: the first stage, the re-rank stages, the output, the evaluation.

    Args:
        output: the run file to write (``RUN.gz``: gzip), with its sidecar ``RUN.json``.
        first_stage: bm25 | dense | hybrid | candidates.
        topics: topic-set name or ``qid<TAB>query`` file (``None`` only with a top1000-style candidates file).
        bm25: the BM25 stage (first stage bm25 or hybrid; also the passage text of a hybrid first stage).
        dense: the dense stage (first stage dense or hybrid).
        fusion: the hybrid first stage's fusion.
        candidates / corpus: a candidate run or top1000 file; passage texts for a candidate run or a dense first
            stage that is re-ranked.
        first_stage_depth: documents per query the first stage returns [``hits`` without re-rank stages].
        rerank: the re-rank stages, in order.
        hits: documents per query in the output run (a last re-rank stage keeps at most its depth).
        threads: Lucene search / FAISS threads (``None``: the libraries' own).
        encoding: batch size, device, precision, truncation.
        mode: the run's name in the sidecar and its default tag (``None``: :meth:`inferred <default_mode>`).
        run_tag: TREC column 6 (``None``: ``kd_pyserini-MODE``).
        msmarco_format: write ``qid<TAB>docid<TAB>rank``.
        evaluate / qrels / measures: evaluate when qrels are found (``qrels``: a name or file, default the topics'
            own; ``measures``: default the benchmark's official ones).
        progress: progress bars on stderr (``None``: when stderr is a terminal).
        passage_store: a ``kd-index passage-store`` folder of the re-ranker's passage side (ColBERT / PreTTR only):
            re-ranking then pays only the query side and the interaction.
    """

    output: str
    first_stage: str
    topics: str | None = None
    bm25: Bm25Stage | None = None
    dense: DenseStage | None = None
    fusion: Fusion | None = None
    candidates: str | None = None
    corpus: str | None = None
    first_stage_depth: int | None = None
    rerank: tuple[RerankStage, ...] = ()
    hits: int = 1000
    threads: int | None = None
    encoding: Encoding = field(default_factory=Encoding)
    mode: str | None = None
    run_tag: str | None = None
    msmarco_format: bool = False
    evaluate: bool = True
    qrels: str | None = None
    measures: tuple[str, ...] | None = None
    progress: bool | None = None
    passage_store: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", os.fspath(self.output))
        object.__setattr__(self, "rerank", tuple(self.rerank))
        if self.passage_store is not None:
            object.__setattr__(self, "passage_store", os.fspath(self.passage_store))
        if self.measures is not None:
            object.__setattr__(self, "measures", tuple(self.measures))
        if self.mode is None:
            object.__setattr__(self, "mode", self.default_mode())
        self.validate()

    # ------------------------------------------------------------------------------------------------ derived
    def default_mode(self) -> str:
        """``rerank`` with re-rank stages, else the first stage's name (a candidates file alone: ``rerank``)."""
        if self.rerank or self.first_stage == "candidates":
            return "rerank"
        return self.first_stage

    @property
    def depth(self) -> int:
        """Documents per query the first stage returns."""
        return self.first_stage_depth or self.hits

    @property
    def output_hits(self) -> int:
        """Documents per query in the output run: ``hits``, at most the last re-rank stage's depth."""
        return min(self.hits, self.rerank[-1].depth) if self.rerank else self.hits

    @property
    def tag(self) -> str:
        """The TREC run tag."""
        return self.run_tag or f"kd_pyserini-{self.mode}"

    @property
    def bi_encoder(self) -> str | None:
        """The bi-encoder of the search (the dense stage's, else a bi-encoder re-rank stage's), or ``None``."""
        if self.dense is not None and self.first_stage in ("dense", "hybrid"):
            return self.dense.encoder
        return next((s.model for s in self.rerank if s.kind == "bi-encoder"), None)

    # ------------------------------------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check that the spec can run; raises :class:`SpecError` (one line) otherwise. Nothing is loaded."""
        fs = self.first_stage
        if fs not in FIRST_STAGES:
            raise SpecError(f"first stage {fs!r} is not one of {', '.join(FIRST_STAGES)}")
        if self.mode not in MODES:
            raise SpecError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if fs in ("bm25", "hybrid") and self.bm25 is None:
            raise SpecError(f"a {fs} first stage needs a BM25 index (--bm25-index LUCENE_DIR)")
        if fs in ("dense", "hybrid") and self.dense is None:
            raise SpecError(f"a {fs} first stage needs a dense index and encoder (--index FAISS_DIR --encoder ENC)")
        if fs == "hybrid" and self.fusion is None:
            raise SpecError("a hybrid first stage needs a fusion method (--fusion)")
        if fs != "hybrid" and self.fusion is not None:
            raise SpecError(f"fusion applies to a hybrid first stage, not {fs}")
        if fs == "candidates" and not self.candidates:
            raise SpecError("a candidates first stage needs a candidates file (--candidates FILE)")
        if fs != "candidates" and self.candidates:
            raise SpecError("give --candidates or --first-stage, not both")
        if self.topics is None and fs != "candidates":
            raise SpecError(f"--topics is required to retrieve {fs} candidates (a name such as dl19-passage or "
                            "scifact, or a file)")
        if fs == "dense" and self.rerank and not self.corpus:
            raise SpecError("--first-stage dense has no passage text: give --corpus (the indexed collection) "
                            "or --bm25-index with stored raw documents (--first-stage hybrid)")
        if fs == "candidates" and not self.rerank:
            raise SpecError("a candidates file is re-ranked: add a re-rank stage (--encoder or --reranker)")
        if self.passage_store and not any(s.kind == "reranker" for s in self.rerank):
            raise SpecError("--passage-store holds a ColBERT/PreTTR re-ranker's passage side: use it with --reranker "
                            "(a late-interaction or split card), or drop it")
        for name, value in (("hits", self.hits), ("first_stage_depth", self.first_stage_depth),
                            ("fusion depth", self.fusion.depth if self.fusion else None),
                            ("batch_size", self.encoding.batch_size),
                            ("rescore", self.dense.rescore if self.dense else None)):
            if value is not None and value < 1:
                raise SpecError(f"{name} must be >= 1 (got {value})")
        for stage in self.rerank:
            if stage.kind not in RERANK_KINDS:
                raise SpecError(f"re-rank stage kind {stage.kind!r} is not one of {', '.join(RERANK_KINDS)}")
            if not stage.model:
                raise SpecError(f"a {stage.kind} re-rank stage needs a model (card name, hub id or folder)")
            if stage.depth < 1:
                raise SpecError(f"re-rank depth must be >= 1 (got {stage.depth})")
        if self.fusion is not None:
            from kd_pyserini.search.hybrid import fusion_parameters

            try:
                fusion_parameters(self.fusion.method, **self.fusion.params())
            except ValueError as e:
                raise SpecError(f"{e} (--fusion)") from None
            if self.fusion.weights is not None and len(self.fusion.weights) != 2:
                raise SpecError(f"{len(self.fusion.weights)} fusion weights for 2 runs; give one per run (--weights)")

    # ------------------------------------------------------------------------------------------------ records
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the sidecar records under ``spec``); :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpec:
        """The spec :meth:`to_dict` wrote (unknown keys are ignored, so older readers keep working)."""
        def build(kind: type, value: Any) -> Any:
            if value is None or isinstance(value, kind):
                return value
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in dict(value).items() if k in names})

        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["bm25"] = build(Bm25Stage, kw.get("bm25"))
        kw["dense"] = build(DenseStage, kw.get("dense"))
        fusion = build(Fusion, kw.get("fusion"))
        if fusion is not None and fusion.weights is not None:
            fusion = replace(fusion, weights=tuple(fusion.weights))
        kw["fusion"] = fusion
        kw["encoding"] = build(Encoding, kw.get("encoding")) or Encoding()
        kw["rerank"] = tuple(build(RerankStage, s) for s in kw.get("rerank") or ())
        return cls(**kw)


# ---------------------------------------------------------------------------------------------- from options

def encoder_from_index(index: str | os.PathLike) -> str:
    """The encoder a dense index records in its ``kd_pyserini.json`` (its card name when known, else its model id).

    Raises:
        SpecError: the index records none (give ``--encoder``).
    """
    from kd_pyserini.cards import list_cards
    from kd_pyserini.index import METADATA_FILENAME, read_metadata

    meta = read_metadata(index)
    if meta is None or "encoder" not in meta:
        raise SpecError(f"--encoder is required: {index} has no {METADATA_FILENAME} naming its encoder")
    enc = meta["encoder"]
    key = str(enc["name"]).strip().lower()
    shipped = any(key in (c.name.lower(), c.model_id.lower(), *(a.lower() for a in c.aliases))
                  for c in list_cards().values())
    return enc["name"] if shipped else enc["model_id"]


def _infer_mode(o: Mapping[str, Any]) -> str:
    if o.get("mode"):
        return o["mode"]
    if o.get("candidates") or o.get("reranker"):
        return "rerank"
    if o.get("index"):
        if o.get("encoder") or (Path(o["index"]) / "index").is_file():
            return "dense"
        return "bm25"
    if o.get("encoder") and o.get("bm25_index"):
        return "rerank"
    if o.get("bm25_index"):
        return "bm25"
    raise SpecError("say what to search: --mode dense|bm25|rerank|hybrid with --index / --bm25-index / "
                    "--candidates (e.g. --encoder ENC --index FAISS_DIR for dense)")


def spec_from_options(options: Mapping[str, Any]) -> SearchSpec:
    """The :class:`SearchSpec` of kd-search's options (names as ``kd-search --help`` spells them, ``-`` as ``_``;
    ``method`` is ``--fusion``; ``do_eval`` is ``--eval/--no-eval``).

    Mode inference (without ``mode``): ``reranker`` or ``candidates`` means rerank; ``encoder`` with ``index`` means
    dense; an ``index`` alone is searched densely (with the encoder its ``kd_pyserini.json`` records) when it is a
    FAISS folder, else by BM25. ``depth`` defaults to 100 with a ``reranker`` and 1000 otherwise.

    Raises:
        SpecError: options that do not fit together (one line naming them and the fix).
    """
    from kd_pyserini.search.cross_rerank import BI_ENCODER_DEPTH, default_depth

    o = dict(options)
    get = o.get
    mode = _infer_mode(o)
    reranker, encoder, index, bm25_index = get("reranker"), get("encoder"), get("index"), get("bm25_index")
    candidates, first = get("candidates"), get("first_stage")
    if reranker and mode != "rerank":
        raise SpecError(f"--reranker re-ranks candidates: use it with --mode rerank, not --mode {mode}")
    if first and not reranker:
        raise SpecError("--first-stage picks the candidates a --reranker re-scores; without one, use --mode "
                        "bm25|dense|hybrid (or --mode rerank --encoder for a bi-encoder)")
    depth = get("depth") or default_depth(_reranker_kind(reranker) if reranker else "bi-encoder")
    topics = get("topics")
    if topics is None and not (mode == "rerank" and candidates):
        raise SpecError("--topics is required (a name such as dl19-passage or scifact, or a file)")
    if mode in ("dense", "hybrid"):
        if not index:
            raise SpecError(f"--mode {mode} needs --index FAISS_DIR")
        encoder = encoder or encoder_from_index(index)
    if mode == "rerank" and not encoder and not reranker:
        raise SpecError("--mode rerank needs --encoder (a bi-encoder) or --reranker (a cross-encoder)")
    if mode == "bm25":
        bm25_index, index = index or bm25_index, None
        if not bm25_index:
            raise SpecError("--mode bm25 needs --index LUCENE_DIR")
    if mode == "hybrid" and not bm25_index:
        raise SpecError("--mode hybrid needs --bm25-index LUCENE_DIR (and --index FAISS_DIR)")

    stages: list[RerankStage] = []
    first_depth: int | None = None
    fusion_depth = depth
    if mode == "rerank" and not reranker:  # a bi-encoder re-ranks BM25 or file candidates
        if not candidates and not bm25_index:
            raise SpecError("--mode rerank needs --bm25-index LUCENE_DIR or --candidates FILE")
        first, first_depth = ("candidates" if candidates else "bm25"), depth
        stages.append(RerankStage("bi-encoder", str(encoder), depth))
    elif mode == "rerank":  # a re-ranker, after an optional bi-encoder over BM25 or file candidates
        if candidates and first:
            raise SpecError("give --candidates or --first-stage, not both")
        first = "candidates" if candidates else first or ("bm25" if bm25_index else "dense")
        if first in ("bm25", "hybrid") and not bm25_index:
            raise SpecError(f"--first-stage {first} needs --bm25-index LUCENE_DIR")
        if first in ("dense", "hybrid"):
            if not index:
                raise SpecError(f"--first-stage {first} needs --index FAISS_DIR (and --encoder)")
            encoder = encoder or encoder_from_index(index)
        middle = encoder is not None and first in ("bm25", "candidates")  # BM25 -> BERT_Dot -> BERT_CAT
        first_depth = max(depth, BI_ENCODER_DEPTH) if middle else depth
        fusion_depth = BI_ENCODER_DEPTH
        if middle:
            stages.append(RerankStage("bi-encoder", str(encoder), BI_ENCODER_DEPTH))
        stages.append(RerankStage("reranker", str(reranker), depth))
    else:
        first = mode
    if first == "hybrid" and topics is None:
        raise SpecError("--topics is required to retrieve hybrid candidates")

    from kd_pyserini.search.bm25 import BM25_DEFAULT

    bm25 = Bm25Stage(str(bm25_index), k1=get("k1", BM25_DEFAULT[0]), b=get("b", BM25_DEFAULT[1]),
                     remove_query=bool(get("remove_query"))) if bm25_index else None
    dense = DenseStage(str(index), str(encoder), ef_search=get("ef_search"), nprobe=get("nprobe"),
                       allow_encoder_mismatch=bool(get("allow_encoder_mismatch")), rescore=get("rescore")) \
        if index and encoder and first in ("dense", "hybrid") else None
    if get("rescore") and dense is None:
        raise SpecError("--rescore re-scores a dense index's candidates: use it with a dense or hybrid first stage "
                        "(--index FAISS_DIR --encoder ENC), or drop it")
    fusion = None
    if first == "hybrid":
        weights = get("weights")
        if isinstance(weights, str):
            weights = _parse_weights(weights)
        fusion = Fusion(get("method") or "interpolation", fusion_depth, alpha=get("alpha", 0.1),
                        normalize=bool(get("normalize")), weight_on_dense=bool(get("weight_on_dense")),
                        rrf_k=get("rrf_k", 60.0), weights=tuple(weights) if weights is not None else None,
                        norm=get("norm") or "minmax")
    measures = get("measures")
    if isinstance(measures, str):
        measures = tuple(m.strip() for m in measures.split(",") if m.strip()) or None
    return SearchSpec(
        output=str(get("output")), first_stage=first, topics=topics, bm25=bm25, dense=dense, fusion=fusion,
        candidates=candidates, corpus=get("corpus"), first_stage_depth=first_depth, rerank=tuple(stages),
        hits=get("hits", 1000), threads=get("threads"),
        encoding=Encoding(batch_size=get("batch_size", 32), device=get("device"), precision=get("precision", "auto"),
                          query_max_length=get("query_max_length"), passage_max_length=get("passage_max_length")),
        mode=mode, run_tag=get("run_tag"), msmarco_format=bool(get("msmarco_format")),
        evaluate=get("do_eval", True), qrels=get("qrels"), measures=measures, progress=get("progress"),
        passage_store=get("passage_store"))


def _reranker_kind(reranker: str) -> str:
    """The card kind of a ``--reranker`` (for its default depth); ``cross-encoder`` when it cannot be resolved here
    (loading it later gives the one-line error)."""
    from kd_pyserini.cards import get_reranker_card

    try:
        return str(getattr(get_reranker_card(reranker), "kind", "cross-encoder"))
    except Exception:  # noqa: BLE001 - resolving is only a hint for the depth; the pipeline reports a bad model
        return "cross-encoder"


def _parse_weights(text: str) -> tuple[float, ...]:
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise SpecError(f"--weights {text!r} is not a comma-separated list of numbers, e.g. 1,0.5") from None
    if len(weights) != 2:
        raise SpecError(f"--weights: {len(weights)} weights for 2 runs; give one per run")
    return weights


def read_spec(run_file: str | os.PathLike) -> SearchSpec | None:
    """The spec kd-search recorded in ``run_file``'s sidecar, or ``None`` (no sidecar, one that does not describe
    this run, one written before specs were recorded, or one that no longer validates)."""
    from kd_pyserini.search.sidecar import read_sidecar

    meta = read_sidecar(run_file)
    data = (meta or {}).get(SPEC_KEY)
    if not isinstance(data, Mapping):
        return None
    try:
        return SearchSpec.from_dict(data)
    except (TypeError, ValueError):
        return None
