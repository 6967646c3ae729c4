"""The student: a BERT_Dot bi-encoder (one transformer for queries and passages, pooled vector, dot product).

BERT_Dot is the student architecture of Hofstätter et al. 2020 ("Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation") and of TAS-B: DistilBERT, the CLS vector, no normalisation, dot product.
Pooling and similarity come from the student's encoder card (:func:`kd_pyserini.cards.get_card`), so a
sentence-transformers student (mean pooling, cosine) trains the way it encodes; both can be overridden.

Checkpoints are plain Hugging Face model directories plus a ``kd_pyserini_card.toml``, so
:func:`kd_pyserini.get_query_encoder`, ``kd-index`` and Pyserini's ``AutoQueryEncoder`` load them as they are.

Smaller students (:func:`keep_layers`, ``--student-layers``): keep ``n`` of a checkpoint's transformer layers, spread
evenly and ending with the last one, the way DistilBERT (Sanh et al. 2019, arXiv:1910.01108) was initialised from
every other layer of BERT; e.g. all-MiniLM-L6-v2 cut to 3 layers (its 2nd, 4th and 6th) as a BERT_Dot student.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd_pyserini.cards import EncoderCard, UnknownEncoderError, get_card, write_card
from kd_pyserini.encoding import load_model, pool
from kd_pyserini.errors import KdError

__all__ = ["BertDotStudent", "resolve_student_card", "DEFAULT_STUDENT", "NonFiniteWeightsError", "keep_layers",
           "kept_layer_indices", "StudentLayersError"]

log = logging.getLogger(__name__)
DEFAULT_STUDENT = "distilbert-base-uncased"


class NonFiniteWeightsError(KdError, FloatingPointError):
    """:meth:`BertDotStudent.save` refused weights holding NaN or infinity."""


class StudentLayersError(KdError, ValueError):
    """``--student-layers`` asks for more layers than the checkpoint has, or fewer than one."""


def kept_layer_indices(total: int, n: int) -> list[int]:
    """The 0-based layers :func:`keep_layers` keeps: ``round((k + 1) * total / n) - 1`` for ``k = 0 .. n - 1``,
    rounding halves up (6 -> 3: ``[1, 3, 5]``; 6 -> 4: ``[1, 2, 4, 5]``; 12 -> 6: every other layer, as DistilBERT).

    Evenly spread and always ending with the last layer; strictly increasing since ``total / n >= 1``.
    """
    if not 1 <= n <= total:
        raise StudentLayersError(f"--student-layers {n}: the starting checkpoint has {total} transformer layers; "
                                 f"choose a number from 1 to {total}")
    return [((k + 1) * total * 2 + n) // (2 * n) - 1 for k in range(n)]


def _layer_list(hf_model: nn.Module) -> tuple[nn.Module, str]:
    """``(module holding the layers, attribute name)``: ``transformer.layer`` (DistilBERT) or ``encoder.layer``
    (BERT, MiniLM, ELECTRA, RoBERTa); a task model (``...ForSequenceClassification``) is cut through its base."""
    base = getattr(hf_model, "base_model", hf_model)
    for holder_name in ("transformer", "encoder"):
        holder = getattr(base, holder_name, None)
        if isinstance(getattr(holder, "layer", None), nn.ModuleList):
            return holder, "layer"
    raise StudentLayersError(f"--student-layers: cannot find the transformer layers of a "
                             f"{type(hf_model).__name__} (expected transformer.layer or encoder.layer)")


def keep_layers(hf_model: nn.Module, n: int) -> list[int]:
    """Keep ``n`` of ``hf_model``'s transformer layers (:func:`kept_layer_indices`), in place, and return their
    original 0-based indices.

    The configuration is updated (``num_hidden_layers``; DistilBERT's ``n_layers``), so a checkpoint saved from the
    cut model loads back as an ``n``-layer model. Keeping all layers changes nothing (so resuming from an already cut
    checkpoint with the same ``n`` is a no-op).

    Raises:
        StudentLayersError: ``n`` is below 1 or above the number of layers (one line).
    """
    holder, attr = _layer_list(hf_model)
    layers = getattr(holder, attr)
    kept = kept_layer_indices(len(layers), int(n))
    if len(kept) == len(layers):
        return kept
    setattr(holder, attr, nn.ModuleList([layers[i] for i in kept]))
    for new, layer in enumerate(getattr(holder, attr)):
        for module in layer.modules():  # attention layers number themselves (key/value caches): renumber
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new
    configs = {id(c): c for c in (getattr(hf_model, "config", None),
                                  getattr(getattr(hf_model, "base_model", None), "config", None)) if c is not None}
    for cfg in configs.values():
        for key in ("num_hidden_layers", "n_layers"):
            if hasattr(cfg, key):
                setattr(cfg, key, len(kept))
    return kept


def resolve_student_card(student: str | EncoderCard, pooling: str | None = None,
                         similarity: str | None = None) -> EncoderCard:
    """The card of a student given as a card name, hub id (``distilbert-base-uncased`` too), or local directory.

    ``pooling`` / ``similarity`` override the card's.
    """
    try:
        card = get_card(student)
    except UnknownEncoderError:
        name = str(student)
        if "/" in name or " " in name:
            raise
        # un-namespaced hub ids (distilbert-base-uncased, bert-base-uncased) are not cards: BERT_Dot defaults
        card = EncoderCard(name=name, model_id=name)
    changes: dict[str, Any] = {"note": None}
    if pooling:
        changes["pooling"] = pooling
    if similarity:
        changes["similarity"] = similarity
    return card.replace(**changes)


class BertDotStudent(nn.Module):
    """A bi-encoder around a Hugging Face ``AutoModel``.

    ``forward(q_ids, q_mask, p_ids, p_mask)`` encodes queries and passages in one call (one ``forward`` per step,
    which is what DistributedDataParallel expects) and returns ``(query_vectors, passage_vectors)`` in float32.

    Args:
        model: the transformer (``AutoModel``).
        pooling: ``cls`` or ``mean``.
        similarity: ``dot`` or ``cosine`` (vectors L2-normalised).
    """

    def __init__(self, model: nn.Module, pooling: str = "cls", similarity: str = "dot"):
        super().__init__()
        self.model = model
        # BERT's pooler (dense + tanh over CLS) is not part of BERT_Dot: no gradient reaches it, so freeze it (DDP
        # would otherwise wait for its gradients forever).
        for name, p in model.named_parameters():
            if name.startswith("pooler."):
                p.requires_grad_(False)
        self.pooling = pooling
        self.similarity = similarity
        self._compiled: Any = None

    @classmethod
    def from_card(cls, card: EncoderCard, student_layers: int | None = None) -> tuple["BertDotStudent", Any]:
        """Load ``(student, tokenizer)`` from a card (local directory, installed package or hub id).

        ``student_layers``: keep only that many of the checkpoint's transformer layers (:func:`keep_layers`).
        """
        tokenizer, model = load_model(card)
        if student_layers is not None:
            total = len(getattr(*_layer_list(model)))
            if not 1 <= student_layers <= total:
                raise StudentLayersError(f"--student-layers {student_layers}: {card.model_location()} has {total} "
                                         f"transformer layers; choose a number from 1 to {total}")
            kept = keep_layers(model, student_layers)
            if len(kept) != total:
                log.info("student %s: kept %d of %d transformer layers (%s, 1-based)", card.name, len(kept), total,
                         ", ".join(str(i + 1) for i in kept))
        return cls(model.train(), card.pooling, card.similarity), tokenizer

    @property
    def dimension(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "dim"))

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (non-reentrant, so DDP and dropout RNG stay exact)."""
        fn = getattr(self.model, "activation_checkpointing_enable", None)
        if fn is not None:
            fn({"use_reentrant": False})
        else:  # transformers < 5
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def compile(self, **kwargs: Any) -> None:  # type: ignore[override]
        """``torch.compile`` the transformer (dynamic shapes: batches are padded to their own longest text)."""
        self._compiled = torch.compile(self.model, dynamic=True, **kwargs)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(n, seq)`` token ids → ``(n, dim)`` float32 vectors (pooled, normalised for cosine)."""
        model = self._compiled if self._compiled is not None else self.model
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vec = pool(hidden.float(), attention_mask, self.pooling)
        if self.similarity == "cosine":
            vec = nn.functional.normalize(vec, p=2, dim=-1)
        return vec

    def forward(self, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: torch.Tensor | list[torch.Tensor],
                p_mask: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and passages in one call; passages may come as length buckets (lists), concatenated in order."""
        q = self.encode(q_ids, q_mask)
        if isinstance(p_ids, (list, tuple)):
            p = torch.cat([self.encode(i, m) for i, m in zip(p_ids, p_mask)])
        else:
            p = self.encode(p_ids, p_mask)
        return q, p

    def save(self, directory: str | Path, tokenizer: Any, card: EncoderCard,
             extra: dict[str, Any] | None = None, final_path: str | Path | None = None) -> Path:
        """Write a Hugging Face model directory (weights, config, tokenizer) plus its encoder card.

        The card records pooling, similarity and the training max lengths, so every loader encodes the way the
        student was trained. ``extra`` is written as ``kd_pyserini_train.json`` (step, metrics...).
        ``final_path``: where the directory will end up when it is written under a temporary name first.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteWeightsError(f"refusing to save non-finite weights to {out} ({len(bad)} tensors, e.g. "
                                        f"{bad[0]})")
        self.model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        cfg = self.model.config
        dest = Path(final_path) if final_path is not None else out
        write_card(card.replace(name=dest.resolve().name or card.name, model_id=str(dest),
                                pooling=self.pooling, similarity=self.similarity, dimension=self.dimension,
                                architecture=getattr(cfg, "model_type", None), note=None), out)
        if extra is not None:
            (out / "kd_pyserini_train.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
        return out
