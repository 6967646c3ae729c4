"""What ColBERT and PreTTR re-rankers share: query and passage read apart first, then an interaction per pair.

Hofstätter et al. 2020 (arXiv 2010.02666) distil a BERT_CAT ensemble into, among others, ColBERT (Khattab & Zaharia
2020; :mod:`kd_pyserini.encoding.colbert`) and PreTTR (MacAvaney et al. 2020; :mod:`kd_pyserini.encoding.prettr`).
Both tokenise query and passage apart (``[CLS] text [SEP]`` each; the query gets ``card.query_mask_tokens`` ``[MASK]``
tokens appended with attention 1, as the authors' notebooks do), compute a *passage side* that does not depend on the
query (ColBERT: token vectors; PreTTR: layer-``k`` states), and score a pair from the two sides. So the passage side can
be computed once and stored (:mod:`kd_pyserini.index.passage_store`), and re-ranking then pays only the query side and
the interaction.

:class:`TokenInteractionReranker` answers the re-ranker interface of :class:`~kd_pyserini.encoding.cross_encoder.
CrossEncoder` (``score``, ``score_pairs``, ``describe``; ``device``, ``precision``, ``batch_size``, lengths,
``threads``) and adds ``score_matrix`` (every query against every passage: ``Q + P`` encoder passes) and
``passage_representations`` (what a store keeps). Pairs are scored in blocks of at most :attr:`block_passages` distinct
passages (so memory stays bounded on a teacher file's chunk); inside a block every distinct query and passage is
encoded once, in length-sorted batches (on CUDA filled up to ``batch_size × max length`` tokens, as the cross-encoder
does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_pyserini.cards import get_reranker_card
from kd_pyserini.encoding.checkpoints import CROSS_PRECISIONS, _model_folder
from kd_pyserini.encoding.batching import autocast, length_batches, place_model
from kd_pyserini.encoding.device import resolve_device
from kd_pyserini.encoding.fingerprint import weights_sha256
from kd_pyserini.encoding.loading import ModelLoadError
from kd_pyserini.encoding.pooling import pad_batch
from kd_pyserini.progress import progress_bar

__all__ = ["TokenInteractionReranker", "weights_sha256"]

log = logging.getLogger(__name__)


class TokenInteractionReranker:
    """Base of the ColBERT and PreTTR re-rankers (see the module docstring).

    Args:
        card: a card of this kind, its name, a hub id or a model folder (:func:`kd_pyserini.cards.get_reranker_card`).
        device: ``cpu``, ``cuda``, ``cuda:1``; ``None`` picks CUDA when present.
        precision: ``fp32``, ``bf16`` (CPU autocast or CUDA weights) or ``fp16`` (CUDA only).
        batch_size: texts per encoder pass and pairs per interaction pass (CUDA: a token budget of
            ``batch_size × max length``).
        query_max_length / passage_max_length: truncation lengths, special tokens included [the card's].
        threads: torch CPU threads (process-wide); ``None`` keeps torch's default.
        max_length: the pair length of a cross-encoder; refused here (query and passage are cut apart).
        store: a :class:`~kd_pyserini.encoding.stored_passages.PassageStore` (or its folder) of this model's passage
            side.
    """

    kind = "token-interaction"
    #: distinct passages encoded at once by :meth:`score_pairs` (bounds memory on large pair lists).
    block_passages = 512

    def __init__(self, card: Any, device: str | None = None, precision: str = "fp32", batch_size: int = 32,
                 query_max_length: int | None = None, passage_max_length: int | None = None,
                 threads: int | None = None, max_length: int | None = None, store: Any = None):
        self.card = get_reranker_card(card)
        if self.card.kind != self.kind:
            raise ValueError(f"{self.card.name} is a {self.card.kind} card, not {self.kind}; build re-rankers with "
                             "kd_pyserini.encoding.rerankers.load_reranker")
        if max_length is not None:
            raise ValueError(f"{self.card.name} is a {self.kind} re-ranker: query and passage are cut apart; give "
                             "query_max_length / passage_max_length instead of max_length (the cross-encoder pair "
                             "length)")
        if precision in CROSS_PRECISIONS or precision == "auto":  # auto resolved; an emulated bf16 warns once
            from kd_pyserini.encoding.precision import resolve_precision

            precision = resolve_precision(precision, device, "encode").precision
        if precision not in CROSS_PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(CROSS_PRECISIONS)} for a re-ranker")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; on CPU use 'bf16' (autocast) or 'fp32'")
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.precision, self.batch_size = precision, batch_size
        self.query_max_length = int(query_max_length or self.card.query_max_length)
        self.passage_max_length = int(passage_max_length or self.card.passage_max_length)
        self.folder = _model_folder(self.card.model_location())
        self.tokenizer, model = self._load(self.folder)
        rows = self._input_embeddings(model).weight.shape[0]
        if len(self.tokenizer) < rows // 2:  # transformers 5 makes a 5-token tokenizer of a folder without vocab
            raise ModelLoadError(f"{self.folder}: the tokenizer holds {len(self.tokenizer)} tokens for a model of "
                                 f"{rows} embeddings (tokenizer files missing or unreadable); put the base model's "
                                 "vocab.txt (or tokenizer.json) into the folder")
        if len(self.tokenizer) > rows:
            raise ModelLoadError(f"{self.folder}: the tokenizer has {len(self.tokenizer)} tokens but the model only "
                                 f"{rows} embeddings: they do not belong together")
        if self.tokenizer.mask_token_id is None and self.card.query_mask_tokens:
            raise ModelLoadError(f"{self.folder}: the tokenizer has no [MASK] token for the query augmentation")
        self.model = place_model(model, self.device, precision).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self.encoder_passes = 0  # sequences run through the encoder (queries + passages), for tests and logs
        self.store: Any = None
        self.store_misses = 0
        self._sha: str | None | bool = False
        if store is not None:
            self.attach_store(store)

    # -- to be given by each kind ----------------------------------------------------------------------------------

    def _load(self, folder: Path) -> tuple[Any, torch.nn.Module]:
        raise NotImplementedError

    def _input_embeddings(self, model: torch.nn.Module) -> torch.nn.Embedding:
        raise NotImplementedError

    def _encode_queries(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` query ids and mask -> ``(B, L, d)`` query-side states."""
        raise NotImplementedError

    def _encode_passages(self, ids: torch.Tensor, mask: torch.Tensor, offset: int) -> torch.Tensor:
        """``(B, L)`` passage ids and mask (as :meth:`passage_tokens` gives them) -> ``(B, L, d)`` passage side."""
        raise NotImplementedError

    def _interact(self, q: Sequence[torch.Tensor], p: Sequence[torch.Tensor]) -> torch.Tensor:
        """Scores ``(B,)`` of pairs ``(q[b], p[b])`` of unpadded query / passage sides."""
        raise NotImplementedError

    def _offset(self, query_length: int) -> int:
        """The passage-side variant a query of this length needs (PreTTR: the position offset); 0 for ColBERT."""
        return 0

    def store_key(self) -> dict[str, Any]:
        """What a passage store of this model must share with it (:mod:`kd_pyserini.index.passage_store`)."""
        return {"kind": self.kind, "name": self.card.name, "model_id": str(self.card.model_id),
                "weights_sha256": self.weights_sha256(), "passage_max_length": self.passage_max_length}

    # -- tokenisation ----------------------------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def query_tokens(self, queries: Sequence[str]) -> list[list[int]]:
        """``[CLS] query [SEP]`` cut at ``query_max_length``, then ``query_mask_tokens`` ``[MASK]`` ids."""
        masks = [self.tokenizer.mask_token_id] * self.card.query_mask_tokens
        return [ids + masks for ids in self._tokenize(queries, self.query_max_length)]

    def passage_tokens(self, passages: Sequence[str]) -> list[list[int]]:
        """``[CLS] passage [SEP]`` cut at ``passage_max_length`` (PreTTR drops the ``[CLS]``)."""
        return self._tokenize(passages, self.passage_max_length)

    # -- forward helpers -------------------------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return autocast(self.device, self.precision)

    def _max_tokens(self) -> int:
        return self.passage_max_length + self.query_max_length + self.card.query_mask_tokens

    def _batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Length-sorted batches (longest first): ``batch_size`` items on CPU; on CUDA as many as fit in
        ``batch_size × max length`` padded tokens."""
        budget = self.batch_size * self._max_tokens() if self.device.type == "cuda" else None
        return length_batches(lengths, self.batch_size, budget)

    def _run(self, rows: Sequence[Sequence[int]], fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
             ) -> list[torch.Tensor]:
        """Each token list through ``fn`` in length-sorted padded batches; the unpadded float32 states per row."""
        out: list[torch.Tensor | None] = [None] * len(rows)
        for idx in self._batches([len(r) for r in rows]):
            ids, mask = pad_batch([rows[i] for i in idx], self._pad_id, pin=self.device.type == "cuda")
            ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
            with self._autocast():
                states = fn(ids, mask).float()
            self.encoder_passes += len(idx)
            for b, i in enumerate(idx):
                out[i] = states[b, :len(rows[i])]
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def query_representations(self, queries: Sequence[str]) -> list[torch.Tensor]:
        """The query side of each query, float32 on the device."""
        return self._run(self.query_tokens(queries), self._encode_queries)

    @torch.inference_mode()
    def passage_representations(self, passages: Sequence[str], offset: int | None = None) -> list[np.ndarray]:
        """The passage side of each passage (what a store keeps), float32 ``(tokens, d)`` arrays."""
        off = self._store_offset() if offset is None else offset
        rows = self.passage_tokens(passages)
        reps = self._run(rows, lambda i, m: self._encode_passages(i, m, off))
        return [r.cpu().numpy() for r in reps]

    def _store_offset(self) -> int:
        return 0

    # -- the store -------------------------------------------------------------------------------------------------

    def weights_sha256(self) -> str | None:
        if self._sha is False:
            self._sha = weights_sha256(self.card)
        return self._sha  # type: ignore[return-value]

    def attach_store(self, store: Any) -> None:
        """Use ``store`` (a :class:`~kd_pyserini.encoding.stored_passages.PassageStore` or its folder) for the passage
        side of passages scored with ``passage_ids``.

        Raises:
            PassageStoreError: the store was built by another model, other weights or other lengths.
        """
        from kd_pyserini.encoding.stored_passages import PassageStore

        store = store if isinstance(store, PassageStore) else PassageStore(store)
        store.check_compatible(self.store_key())
        self.store = store

    def _passage_side(self, passages: Sequence[str], passage_ids: Sequence[str] | None, need: dict[int, set[int]]
                      ) -> dict[tuple[int, int], torch.Tensor]:
        """``(passage index, offset) -> passage side`` for every needed pair, from the store when it has the id."""
        out: dict[tuple[int, int], torch.Tensor] = {}
        for off, js in need.items():
            todo = sorted(js)
            if self.store is not None and passage_ids is not None:
                found = self.store.get([str(passage_ids[j]) for j in todo])
                for j, rep in zip(todo, found):
                    if rep is not None:
                        out[(j, off)] = torch.from_numpy(rep.astype(np.float32)).to(self.device)
                missing = [j for j, rep in zip(todo, found) if rep is None]
                if missing:
                    self.store_misses += len(missing)
                    log.warning("%d of %d passages are not in the passage store %s (e.g. %r): encoded now",
                                len(missing), len(todo), self.store.path, str(passage_ids[missing[0]]))
                todo = missing
            if todo:
                reps = self._run(self.passage_tokens([passages[j] for j in todo]),
                                 lambda i, m, o=off: self._encode_passages(i, m, o))
                out.update({(j, off): r for j, r in zip(todo, reps)})
        return out

    # -- scoring ---------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], passages: Sequence[str],
                    pairs: Sequence[tuple[int, int]] | None = None, progress: bool | None = False,
                    on_batch: Callable[[int], None] | None = None,
                    passage_ids: Sequence[str] | None = None) -> np.ndarray:
        """Scores of pairs, in the order given (float32).

        Args:
            queries / passages: texts. Without ``pairs`` they are zipped (``len(queries) == len(passages)``).
            pairs: ``(query index, passage index)`` per pair.
            progress: a bar of pairs on stderr. on_batch: called with the number of pairs after each batch.
            passage_ids: ids of ``passages``; with a store attached, the passage side of stored ids is read from it.
        """
        if pairs is None:
            if len(queries) != len(passages):
                raise ValueError(f"{len(queries)} queries but {len(passages)} passages; give pairs=[(i, j), ...]")
            pairs = [(i, i) for i in range(len(queries))]
        if passage_ids is not None and len(passage_ids) != len(passages):
            raise ValueError(f"{len(passage_ids)} passage ids for {len(passages)} passages")
        out = np.empty(len(pairs), dtype=np.float32)
        if len(pairs) == 0:
            return out
        pq = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        with progress_bar(total=len(pq), desc=self.kind, unit="pair", progress=progress) as bar:
            for block in self._blocks(pq):
                uq = np.unique(pq[block, 0])
                q_reps = dict(zip(uq.tolist(), self.query_representations([queries[i] for i in uq])))
                need: dict[int, set[int]] = {}
                for k in block:
                    need.setdefault(self._offset(len(q_reps[int(pq[k, 0])])), set()).add(int(pq[k, 1]))
                p_reps = self._passage_side(passages, passage_ids, need)
                keys = [(int(pq[k, 0]), (int(pq[k, 1]), self._offset(len(q_reps[int(pq[k, 0])])))) for k in block]
                lengths = [len(q_reps[i]) + len(p_reps[pk]) for i, pk in keys]
                for idx in self._batches(lengths):
                    with self._autocast():
                        s = self._interact([q_reps[keys[b][0]] for b in idx], [p_reps[keys[b][1]] for b in idx])
                    out[np.asarray(block)[idx]] = s.float().cpu().numpy()
                    bar.update(len(idx))
                    if on_batch is not None:
                        on_batch(len(idx))
        return out

    def _blocks(self, pq: np.ndarray) -> list[list[int]]:
        """Pair positions sorted by query, cut so that a block holds at most :attr:`block_passages` passages."""
        order = np.lexsort((pq[:, 1], pq[:, 0]))
        blocks: list[list[int]] = [[]]
        seen: set[int] = set()
        for k in order.tolist():
            j = int(pq[k, 1])
            if j not in seen and len(seen) >= self.block_passages:
                blocks.append([])
                seen = set()
            blocks[-1].append(k)
            seen.add(j)
        return blocks

    def score(self, query: str, passages: Sequence[str], passage_ids: Sequence[str] | None = None) -> np.ndarray:
        """Scores of one query against several passages."""
        return self.score_pairs([query], passages, [(0, j) for j in range(len(passages))], passage_ids=passage_ids)

    def score_matrix(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """``(len(queries), len(passages))`` float32: every query against every passage, each text encoded once per
        passage-side variant (ColBERT: ``Q + P`` encoder passes)."""
        old, self.block_passages = self.block_passages, max(self.block_passages, len(passages))
        try:
            pairs = [(i, j) for i in range(len(queries)) for j in range(len(passages))]
            return self.score_pairs(queries, passages, pairs).reshape(len(queries), len(passages))
        finally:
            self.block_passages = old

    def describe(self) -> dict[str, Any]:
        """What run sidecars and teacher manifests record."""
        return {**self.card.describe(), "query_max_length": self.query_max_length,
                "passage_max_length": self.passage_max_length, "precision": self.precision,
                "device": str(self.device), "batch_size": self.batch_size,
                "passage_store": None if self.store is None else str(self.store.path)}
