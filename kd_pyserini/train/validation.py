"""Periodic validation during training: re-rank a fixed candidate set with the student, score it with qrels.

Candidates are MS MARCO ``top1000``-style rows ``qid<TAB>pid<TAB>query<TAB>passage`` (``.gz`` accepted), e.g. the
shared TREC-DL 2019 BM25 top-100 (``candidates.dl19.bm25-top100.tsv.gz``); with ``topics`` given, rows may also be
``qid<TAB>pid<TAB>passage`` and the query text comes from the topics. Every query and passage is tokenised once, up
front; each validation encodes them with the current weights (eval mode, no gradients), ranks each query's
candidates by the student score and evaluates with :func:`kd_pyserini.evaluation.evaluate` (``trec_eval -c``
semantics over the evaluated, judged queries).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kd_pyserini.candidates import read_top1000
from kd_pyserini.encoding.pooling import pad_batch
from kd_pyserini.trec_io import Qrels, qid_order

__all__ = ["RerankValidator"]

log = logging.getLogger(__name__)


class RerankValidator:
    """Re-rank candidates with the student and evaluate.

    Args:
        candidates: the candidates file (see the module docstring).
        qrels: ``{qid: {docid: grade}}``, or a qrels name / path for :func:`kd_pyserini.resources.get_qrels`.
        topics: optional ``{qid: query}`` or a topics name / path; restricts and supplies the query texts.
        measures: measure names (first one is the default selection measure).
        max_queries: evaluate only the first ``n`` judged queries (numeric qid order), to keep validation cheap.
    """

    def __init__(self, candidates: str | os.PathLike, qrels: Qrels | str | os.PathLike,
                 topics: dict[str, str] | str | os.PathLike | None = None,
                 measures: Sequence[str] = ("nDCG@10", "RR@10"), max_queries: int | None = None):
        from kd_pyserini.resources import get_qrels, get_topics

        if topics is not None and not isinstance(topics, dict):
            topics = get_topics(topics)
        if not isinstance(qrels, dict):
            qrels = get_qrels(qrels)
        top = read_top1000(candidates, topics, three_field_hint="--validation-topics")
        queries, cands, passages = top.queries, top.lists, top.passages
        judged = sorted((q for q in cands if qrels.get(q)), key=qid_order)
        if not judged:
            raise ValueError(f"none of the {len(cands)} queries in {candidates} has judgements in the qrels; check "
                             "that --validation-qrels matches --validation-candidates")
        if max_queries:
            judged = judged[:max_queries]
        self.qids = judged
        self.queries = [queries[q] for q in judged]
        self.candidates = {q: cands[q] for q in judged}
        pids = sorted({p for q in judged for p in cands[q]})
        self.pids = pids
        self._pid_row = {p: i for i, p in enumerate(pids)}
        self.passages = [passages[p] for p in pids]
        self.qrels = {q: qrels[q] for q in judged}
        self.measures = list(measures)
        self._q_tok: list[list[int]] | None = None
        self._p_tok: list[list[int]] | None = None
        log.info("validation: %d queries, %d candidate passages from %s", len(judged), len(pids), candidates)

    def describe(self) -> dict[str, Any]:
        return {"queries": len(self.qids), "passages": len(self.pids), "measures": self.measures}

    def prepare(self, tokenizer: Any, query_max_length: int, passage_max_length: int) -> None:
        """Tokenise all queries and passages once."""
        kw = dict(truncation=True, padding=False, return_attention_mask=False, return_token_type_ids=False)
        self._q_tok = tokenizer(self.queries, max_length=query_max_length, **kw)["input_ids"]
        self._p_tok = tokenizer(self.passages, max_length=passage_max_length, **kw)["input_ids"]
        self._pad_id = tokenizer.pad_token_id or 0

    def _embed(self, student, ids: list[list[int]], device: torch.device, autocast, batch_size: int) -> torch.Tensor:
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = torch.empty((len(ids), student.dimension), dtype=torch.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in idx], self._pad_id)
            with autocast():
                vec = student.encode(input_ids.to(device), mask.to(device))
            out[torch.as_tensor(idx)] = vec.float().cpu()
        return out

    @torch.no_grad()
    def run(self, student, device: torch.device | str = "cpu", autocast=contextlib.nullcontext,
            batch_size: int = 128) -> dict[str, dict[str, float]]:
        """The student's re-ranking as a run ``{qid: {pid: score}}``."""
        if self._q_tok is None:
            raise RuntimeError("call prepare(tokenizer, ...) first")
        device = torch.device(device)
        if getattr(student, "architecture", "bert-dot") != "bert-dot":
            return self._run_pairs(student, device, autocast, batch_size)
        was_training = student.training
        student.eval()
        try:
            q = self._embed(student, self._q_tok, device, autocast, batch_size)
            p = self._embed(student, self._p_tok, device, autocast, batch_size)
        finally:
            student.train(was_training)
        run: dict[str, dict[str, float]] = {}
        for i, qid in enumerate(self.qids):
            rows = torch.tensor([self._pid_row[x] for x in self.candidates[qid]])
            scores = (p[rows] @ q[i]).tolist()
            run[qid] = dict(zip(self.candidates[qid], scores))
        return run

    def _run_pairs(self, student, device: torch.device, autocast, batch_size: int) -> dict[str, dict[str, float]]:
        """A pair student (BERT_CAT, ColBERT, PreTTR) scores every (query, candidate) pair, in batches of pairs."""
        assert self._q_tok is not None and self._p_tok is not None
        pairs = [(i, self._pid_row[x]) for i, qid in enumerate(self.qids) for x in self.candidates[qid]]
        scores = np.empty(len(pairs), dtype=np.float32)
        was_training = student.training
        student.eval()
        try:
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start:start + batch_size]
                q_ids, q_mask = pad_batch([self._q_tok[i] for i, _ in chunk], self._pad_id)
                p_ids, p_mask = pad_batch([self._p_tok[j] for _, j in chunk], self._pad_id)
                rows = torch.arange(len(chunk), device=device)
                with autocast():
                    s = student(q_ids.to(device), q_mask.to(device), p_ids.to(device), p_mask.to(device), rows, rows)
                scores[start:start + len(chunk)] = s.float().cpu().numpy()
        finally:
            student.train(was_training)
        run: dict[str, dict[str, float]] = {}
        at = 0
        for qid in self.qids:
            n = len(self.candidates[qid])
            run[qid] = dict(zip(self.candidates[qid], scores[at:at + n].tolist()))
            at += n
        return run

    def __call__(self, student, device: torch.device | str = "cpu", autocast=contextlib.nullcontext,
                 batch_size: int = 128) -> dict[str, float]:
        """Re-rank and evaluate: ``{measure: value}``."""
        from kd_pyserini.evaluation import evaluate

        return evaluate(self.run(student, device, autocast, batch_size), self.qrels, self.measures)
