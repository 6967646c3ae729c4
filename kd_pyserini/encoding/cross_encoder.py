"""Cross-encoders (re-rankers): score (query, passage) pairs read together, without Pyserini (no JVM, no Lucene).

A pair is read as ``[CLS] query [SEP] passage [SEP]`` (the tokenizer's own pair template), cut at the card's
``max_length`` the way the Hugging Face tokenizer cuts a pair with ``truncation=True`` (``longest_first``), and the
score is one logit. Two families (:data:`kd_pyserini.cards.CROSS_ENCODER_FAMILIES`):

* ``sequence-classification``: a ``*ForSequenceClassification`` checkpoint with one label (``cross-encoder/ms-marco-
  MiniLM-L6-v2``); the score is ``logits[:, 0]``. A checkpoint whose head was not in the weights (a bi-encoder loaded
  by mistake) is refused: its logits would be random;
* ``bert-cat``: Hofstätter's matchmaker ``BERT_Cat`` (config ``model_type: "BERT_Cat"``, ``bert_model``; weights
  ``bert_model.*`` and ``_classification_layer.*``, a ``Linear(hidden, 1)``). The score is that layer on the CLS vector
  of the last hidden state (DistilBERT, ELECTRA) or on the pooler output (BERT, ALBERT, RoBERTa), as matchmaker's
  ``forward_representation`` does. The base model's configuration comes from ``bert_model`` when it is a local folder
  or in the Hugging Face cache, else it is read off the weights' shapes (DistilBERT and BERT bases, 64-dim heads).

Fast paths (:class:`CrossEncoder`): each distinct query and passage is tokenised once (the Rust tokenizer, in
parallel) and pairs are assembled from the pieces with the tokenizer's own truncation and template, so the token ids
equal ``tokenizer(q, p, truncation=True, max_length=L)``; pairs are sorted by length and each batch is padded only to
its longest pair; on CPU the linear layers run oneDNN's matmul (``precision="bf16"``: bf16 weights and autocast); on
CUDA the weights are cast to fp16/bf16 and batches are filled up to a token budget from pinned memory.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_pyserini.cards import CrossEncoderCard, get_cross_encoder_card
from kd_pyserini.encoding.checkpoints import (_IGNORABLE, CROSS_PRECISIONS, _base_config, _load_tokenizer,
                                             _model_folder, _read_state_dict)
from kd_pyserini.encoding.batching import autocast, length_batches, place_model
from kd_pyserini.encoding.device import resolve_device
from kd_pyserini.encoding.loading import ModelLoadError
from kd_pyserini.progress import progress_bar

__all__ = ["CROSS_PRECISIONS", "BertCat", "CrossEncoder", "load_cross_encoder", "new_bert_cat_student",
           "save_bert_cat"]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------------

class BertCat(torch.nn.Module):
    """matchmaker's ``BERT_Cat``: ``Linear(hidden, 1)`` on the CLS vector (DistilBERT, ELECTRA) or on the pooler output
    (other bases), returning one score per pair. Attribute names match the checkpoint's keys."""

    def __init__(self, bert_model: torch.nn.Module, use_pooler: bool | None = None):
        super().__init__()
        self.bert_model = bert_model
        hidden = int(getattr(bert_model.config, "hidden_size", None) or bert_model.config.dim)
        self._classification_layer = torch.nn.Linear(hidden, 1)
        prefix = getattr(bert_model, "base_model_prefix", "")
        self.use_pooler = prefix not in ("distilbert", "electra") if use_pooler is None else use_pooler

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.bert_model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        vec = out.pooler_output if self.use_pooler else out.last_hidden_state[:, 0]
        return self._classification_layer(vec).squeeze(-1)


class _OneLogit(torch.nn.Module):
    """A one-label sequence-classification model returning ``logits[:, 0]``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits[:, 0]


def _base_of(model: torch.nn.Module) -> torch.nn.Module:
    return model.bert_model if isinstance(model, BertCat) else model.model


def _takes_token_types(model: torch.nn.Module) -> bool:
    """Whether the transformer's ``forward`` names ``token_type_ids`` (BERT does; DistilBERT does not)."""
    inner = _base_of(model)
    return "token_type_ids" in inspect.signature(inner.forward).parameters


# ------------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------------

def _check_vocab(tokenizer: Any, model: torch.nn.Module, folder: Path) -> None:
    rows = _base_of(model).get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelLoadError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model only {rows} "
                             "embeddings: they do not belong together")


def _load_bert_cat(folder: Path, card: CrossEncoderCard) -> tuple[Any, torch.nn.Module]:
    from transformers import AutoModel

    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if str(cfg.get("model_type", "")).lower() != "bert_cat":
        raise ModelLoadError(f"{folder / 'config.json'} has model_type {cfg.get('model_type')!r}, not 'BERT_Cat'; "
                             "a one-label *ForSequenceClassification checkpoint needs family = "
                             "\"sequence-classification\"")
    sd = _read_state_dict(folder)
    head = {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith("_classification_layer.")}
    base_sd = {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith("bert_model.")}
    if set(head) != {"weight", "bias"} or not base_sd:
        raise ModelLoadError(f"{folder}: not matchmaker's BERT_Cat layout (expected weights 'bert_model.*' and "
                             "'_classification_layer.weight/bias')")
    bert_model = str(cfg.get("bert_model") or card.tokenizer or "")
    base = AutoModel.from_config(_base_config(bert_model, base_sd, folder))
    missing, unexpected = base.load_state_dict(base_sd, strict=False)
    missing = [k for k in missing if not k.endswith(_IGNORABLE)]
    unexpected = [k for k in unexpected if not k.endswith(_IGNORABLE)]
    if missing or unexpected:
        raise ModelLoadError(f"{folder}: the weights do not fit the base model ({len(missing)} missing, e.g. "
                             f"{(missing or ['-'])[0]}; {len(unexpected)} unexpected, e.g. {(unexpected or ['-'])[0]})")
    model = BertCat(base)
    if tuple(head["weight"].shape) != (1, model._classification_layer.in_features):
        raise ModelLoadError(f"{folder}: _classification_layer.weight has shape {tuple(head['weight'].shape)}; "
                             f"expected (1, {model._classification_layer.in_features})")
    model._classification_layer.load_state_dict({k: v.float() for k, v in head.items()})
    tokenizer = _load_tokenizer(folder, [card.tokenizer or "", bert_model], auto=False)
    return tokenizer, model


def _load_sequence_classification(folder: Path, card: CrossEncoderCard) -> tuple[Any, torch.nn.Module]:
    from transformers import AutoModelForSequenceClassification

    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"could not load the sequence-classification model in {folder}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(_IGNORABLE))
    if missing:
        raise ModelLoadError(f"{folder}: {len(missing)} weights are not in the checkpoint (e.g. {missing[0]}), so "
                             "they would be random: it is not a trained cross-encoder (a bi-encoder teacher needs its "
                             "card name or a folder without a classification head)")
    if int(model.config.num_labels) != 1:
        raise ModelLoadError(f"{folder}: the classification head has {model.config.num_labels} labels; a re-ranker "
                             "card needs a one-logit head")
    return _load_tokenizer(folder, [card.tokenizer or ""]), _OneLogit(model)


def load_cross_encoder(card: CrossEncoderCard | str) -> tuple[Any, torch.nn.Module]:
    """Load ``(tokenizer, model)`` for a re-ranker card; ``model(input_ids, attention_mask, token_type_ids)``
    returns one float score per pair.

    Raises:
        ModelLoadError: one line naming where it looked and how to fix it.
    """
    card = get_cross_encoder_card(card)
    folder = _model_folder(card.model_location())
    loader = _load_bert_cat if card.family == "bert-cat" else _load_sequence_classification
    tokenizer, model = loader(folder, card)
    _check_vocab(tokenizer, model, folder)
    return tokenizer, model.eval()


# ------------------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------------------

def _pad3(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
          pin: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids_a = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for i, (ids, tt) in enumerate(rows):
        ids_a[i, :len(ids)] = ids
        mask[i, :len(ids)] = 1
        types[i, :len(tt)] = tt
    out = (torch.from_numpy(ids_a), torch.from_numpy(mask), torch.from_numpy(types))
    return tuple(t.pin_memory() for t in out) if pin else out  # type: ignore[return-value]


class CrossEncoder:
    """A re-ranker on one device at one precision: ``(query, passage)`` pairs in, one float32 score each out.

    Args:
        card: a :class:`~kd_pyserini.cards.CrossEncoderCard`, card name, hub id or model folder.
        device: ``cpu``, ``cuda``, ``cuda:1``; ``None`` picks CUDA when present.
        precision: ``fp32``, ``bf16`` (CPU autocast or CUDA weights) or ``fp16`` (CUDA only).
        batch_size: pairs per forward pass (CUDA: up to ``batch_size * max_length`` tokens per batch).
        max_length: pair length in tokens, special tokens included [the card's].
        query_max_length / passage_max_length: also cut the query / passage to this many tokens before pairing
            (``None``: only the pair limit applies, as the Hugging Face tokenizer does).
        threads: torch CPU threads (process-wide); ``None`` keeps torch's default.
    """

    def __init__(self, card: CrossEncoderCard | str, device: str | None = None, precision: str = "fp32",
                 batch_size: int = 32, max_length: int | None = None, query_max_length: int | None = None,
                 passage_max_length: int | None = None, threads: int | None = None):
        self.card = get_cross_encoder_card(card)
        if precision in CROSS_PRECISIONS or precision == "auto":  # auto resolved; an emulated bf16 warns once
            from kd_pyserini.encoding.precision import resolve_precision

            precision = resolve_precision(precision, device, "encode").precision
        if precision not in CROSS_PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(CROSS_PRECISIONS)} for a "
                             "cross-encoder (int8 is for bi-encoder queries only)")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; on CPU use 'bf16' (autocast) or 'fp32'")
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.precision, self.batch_size = precision, batch_size
        self.tokenizer, model = load_cross_encoder(self.card)
        limit = int(getattr(_base_of(model).config, "max_position_embeddings", 512) or 512)
        self.max_length = int(max_length or self.card.max_length)
        if self.max_length > limit:
            raise ValueError(f"max_length {self.max_length} exceeds the model's {limit} positions")
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.model = place_model(model, self.device, precision).eval()
        self.token_types = _takes_token_types(model)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._part, self._pair = self._rust_tokenizers()

    # -- tokenisation ----------------------------------------------------------------------------------------------

    def _rust_tokenizers(self) -> tuple[Any, Any]:
        """Two private copies of the Rust tokenizer: one that encodes texts whole (no special tokens), one that cuts
        and templates a pair exactly as ``tokenizer(q, p, truncation=True, max_length=L)`` does."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None, None
        from tokenizers import Tokenizer

        part, pair = Tokenizer.from_str(backend.to_str()), Tokenizer.from_str(backend.to_str())
        for t in (part, pair):
            t.no_padding()
        part.no_truncation()
        pair.enable_truncation(self.max_length)
        return part, pair

    def encode_pairs(self, queries: Sequence[str], passages: Sequence[str],
                     pairs: Sequence[tuple[int, int]]) -> list[tuple[list[int], list[int]]]:
        """Token ids and token type ids of each pair ``(i, j)`` = ``(queries[i], passages[j])``; every text is
        tokenised once however many pairs it is in."""
        if self._part is None:  # a Python-only tokenizer: tokenise the pairs as text
            if self.query_max_length or self.passage_max_length:
                raise ValueError(f"{self.card.name}: query/passage max lengths need a fast (Rust) tokenizer")
            enc = self.tokenizer([queries[i] for i, _ in pairs], [passages[j] for _, j in pairs], truncation=True,
                                 max_length=self.max_length, padding=False, return_token_type_ids=True)
            return [(ids, tt) for ids, tt in zip(enc["input_ids"], enc["token_type_ids"])]
        q_enc = self._part.encode_batch(list(queries), add_special_tokens=False)
        p_enc = self._part.encode_batch(list(passages), add_special_tokens=False)
        for encs, cut in ((q_enc, self.query_max_length), (p_enc, self.passage_max_length)):
            if cut:
                for e in encs:
                    e.truncate(cut)
        post = self._pair.post_process
        out = []
        for i, j in pairs:
            e = post(q_enc[i], p_enc[j], add_special_tokens=True)
            out.append((e.ids, e.type_ids))
        return out

    # -- forward ---------------------------------------------------------------------------------------------------

    def _autocast(self) -> torch.autocast:
        return autocast(self.device, self.precision)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        dev = self.device
        ids, mask = ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True)
        tt = types.to(dev, non_blocking=True) if self.token_types else None
        with self._autocast():
            return self.model(ids, mask, tt).float()

    def _batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Indices of length-sorted batches (longest first): ``batch_size`` pairs each on CPU; on CUDA as many as
        fit in ``batch_size * max_length`` padded tokens."""
        budget = self.batch_size * self.max_length if self.device.type == "cuda" else None
        return length_batches(lengths, self.batch_size, budget)

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], passages: Sequence[str],
                    pairs: Sequence[tuple[int, int]] | None = None, progress: bool | None = False,
                    on_batch: Callable[[int], None] | None = None,
                    passage_ids: Sequence[str] | None = None) -> np.ndarray:
        """Scores of pairs, in the order given.

        Args:
            queries / passages: texts. Without ``pairs`` they are zipped (``len(queries) == len(passages)``).
            pairs: ``(query index, passage index)`` per pair, to score many pairs over few distinct texts.
            progress: a bar of pairs scored on stderr. on_batch: called with the number of pairs after each batch.
            passage_ids: accepted for the common re-ranker interface and not used: a cross-encoder reads query and
                passage together, so it has no stored passage side (ColBERT/PreTTR read theirs by id).
        """
        if pairs is None:
            if len(queries) != len(passages):
                raise ValueError(f"{len(queries)} queries but {len(passages)} passages; give pairs=[(i, j), ...]")
            pairs = [(i, i) for i in range(len(queries))]
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        rows = self.encode_pairs(queries, passages, pairs)
        pin = self.device.type == "cuda"
        scores: list[torch.Tensor] = []
        where: list[np.ndarray] = []
        with progress_bar(total=len(rows), desc="cross-encoder", unit="pair", progress=progress) as bar:
            for idx in self._batches([len(r[0]) for r in rows]):
                scores.append(self._forward(*_pad3([rows[i] for i in idx], self._pad_id, pin)))
                where.append(idx)
                bar.update(len(idx))
                if on_batch is not None:
                    on_batch(len(idx))
        out = np.empty(len(rows), dtype=np.float32)
        out[np.concatenate(where)] = torch.cat(scores).cpu().numpy()
        return out

    def score(self, query: str, passages: Sequence[str], passage_ids: Sequence[str] | None = None) -> np.ndarray:
        """Scores of one query against several passages (``passage_ids``: see :meth:`score_pairs`)."""
        return self.score_pairs([query], passages, [(0, j) for j in range(len(passages))])

    def describe(self) -> dict[str, Any]:
        """What run sidecars and teacher manifests record."""
        return {**self.card.describe(), "max_length": self.max_length, "query_max_length": self.query_max_length,
                "passage_max_length": self.passage_max_length, "precision": self.precision,
                "device": str(self.device), "batch_size": self.batch_size}


# ------------------------------------------------------------------------------------------------------------------
# Students (Margin-MSE training): a BERT_Cat to train, and its hub layout on disk
# ------------------------------------------------------------------------------------------------------------------

def new_bert_cat_student(base: str | Path) -> BertCat:
    """A BERT_CAT to train: the transformer of ``base`` (a local folder or cached hub id) and a fresh
    ``_classification_layer``; ``model(input_ids, attention_mask, token_type_ids)`` gives one differentiable score
    per pair (``[CLS] query [SEP] passage [SEP]``)."""
    from transformers import AutoModel

    return BertCat(AutoModel.from_pretrained(str(base)))


def save_bert_cat(model: BertCat, tokenizer: Any, folder: str | Path, bert_model: str) -> Path:
    """Write ``model`` in matchmaker's BERT_Cat layout, which :func:`load_cross_encoder` reads (config ``model_type:
    "BERT_Cat"`` and ``bert_model``; ``model.safetensors`` with ``bert_model.*`` and ``_classification_layer.*``; the
    tokenizer), each file under a temporary name, then renamed."""
    from safetensors.torch import save_file

    from kd_pyserini.atomic import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if not all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()):
        raise ValueError(f"refusing to save non-finite BERT_Cat weights into {folder}")
    tmp = folder / ".model.safetensors.tmp"
    save_file(sd, str(tmp))
    tmp.replace(folder / "model.safetensors")
    with atomic_write(folder / "config.json") as f:
        json.dump({"architectures": ["BERT_Cat"], "model_type": "BERT_Cat", "bert_model": str(bert_model)}, f,
                  indent=2)
    tokenizer.save_pretrained(str(folder))
    return folder
