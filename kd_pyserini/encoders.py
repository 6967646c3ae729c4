"""Turn text into vectors the way an encoder card says, as Pyserini ``QueryEncoder`` / ``DocumentEncoder`` objects.

BERT_Dot (TAS-B, Margin-MSE): one shared DistilBERT for queries and passages, the CLS vector, no normalisation,
dot product; query max length 30, passage max length 200 (the authors' training settings). Cards with
``pooling = "mean"`` / ``similarity = "cosine"`` (all-MiniLM-L6-v2) use masked mean pooling and L2 normalisation.

The encoder classes subclass Pyserini's, so they plug into ``FaissSearcher`` and ``HybridSearcher`` unchanged, and
:func:`register_with_pyserini` makes Pyserini's own command-line tools pick them for ``--encoder distilbert-dot...``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyserini.encode import DocumentEncoder, QueryEncoder

from kd_pyserini.cards import EncoderCard, get_card

__all__ = ["PRECISIONS", "resolve_device", "TextEncoder", "KDQueryEncoder", "KDDocumentEncoder",
           "get_query_encoder", "get_document_encoder", "register_with_pyserini", "pool", "ModelLoadError"]

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "bf16")


class ModelLoadError(OSError):
    """The model weights or tokenizer could not be loaded; the message says from where and how to fix it."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when present, else CPU. Asking for CUDA on a machine without it is an error."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available on this machine; use "
                         "device='cpu' (or leave it unset to pick CUDA when present)")
    return dev


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token vectors ``(batch, seq, dim)`` into one vector per text: ``cls`` (first token) or masked ``mean``."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling {pooling!r}; expected 'cls' or 'mean'")


def load_model(card: EncoderCard) -> tuple[Any, torch.nn.Module]:
    """Load ``(tokenizer, model)`` for a card from its local package, local directory or hub id.

    Raises:
        ModelLoadError: with a one-line message naming where it looked and how to fix it.
    """
    from transformers import AutoModel, AutoTokenizer

    location = card.model_location()
    is_dir = Path(location).expanduser().is_dir()
    if is_dir and not (Path(location).expanduser() / "config.json").is_file():
        raise ModelLoadError(f"{location} has no config.json, so it is not a Hugging Face model directory; "
                             "point --encoder at the folder that holds config.json and the weights")
    if not is_dir and not _hub_cached(location) and not _hub_reachable():
        raise ModelLoadError(
            f"{location!r} is not in the local Hugging Face cache and the hub cannot be reached (offline?). Fix: on a "
            f"machine with internet run 'huggingface-cli download {location} --local-dir DIR' and pass DIR as the "
            "encoder, or use the offline 'all-minilm-l6-v2'")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModel.from_pretrained(location)
    except (OSError, ValueError) as e:
        if is_dir:
            raise ModelLoadError(f"could not load the model in {location}: {str(e).splitlines()[0]}") from e
        raise ModelLoadError(
            f"could not load {location!r} from the Hugging Face hub ({type(e).__name__}: no network, or no such "
            f"model). Fix: on a machine with internet run 'huggingface-cli download {location} --local-dir DIR' and "
            "pass DIR as the encoder") from e
    return tokenizer, model.eval()


def _hub_cached(repo_id: str) -> bool:
    """Whether ``repo_id``'s config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001  (malformed ids etc.: let from_pretrained report)
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub, so an offline machine fails at once instead of retrying for a minute."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


class TextEncoder:
    """The shared core: a tokenizer and a model, on one device at one precision, turning texts into vectors.

    Args:
        card: the encoder card (or a name / hub id / directory resolved with :func:`get_card`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when present.
        precision: ``"fp32"`` (default), ``"fp16"`` (CUDA only) or ``"bf16"`` (CUDA, or CPU autocast).
        batch_size: texts per forward pass.
    """

    def __init__(self, card: EncoderCard | str, device: str | None = None, precision: str = "fp32",
                 batch_size: int = 32):
        self.card = get_card(card)
        if self.card.note:
            log.warning(self.card.note)
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; on CPU use 'bf16' (autocast) or 'fp32'")
        self.precision = precision
        self.batch_size = batch_size
        self.tokenizer, model = load_model(self.card)
        if self.device.type == "cuda" and precision != "fp32":
            model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        self.model = model.to(self.device)
        self.dimension = int(getattr(model.config, "hidden_size", None) or getattr(model.config, "dim"))
        if self.card.dimension is not None and self.card.dimension != self.dimension:
            raise ValueError(f"card {self.card.name} says dimension {self.card.dimension} but the model has "
                             f"{self.dimension}")
        self._pad_id = self.tokenizer.pad_token_id or 0

    def _autocast(self):
        if self.precision == "bf16" and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _pad(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        return input_ids, mask

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        input_ids = input_ids.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        with self._autocast():
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        vec = pool(hidden.float(), mask, self.card.pooling)
        if self.card.normalize:
            vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
        return vec

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], max_length: int, batch_size: int | None = None) -> np.ndarray:
        """Encode ``texts`` into a ``(n, dim)`` float32 array, in input order.

        The texts are tokenised once, sorted by token length (longest first) and batched, so each batch is padded
        only to its own longest text; the output is put back in the input order.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        bs = batch_size or self.batch_size
        ids = self._tokenize(texts, max_length)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            input_ids, mask = self._pad([ids[i] for i in idx])
            out[idx] = self._forward(input_ids, mask).cpu().numpy()
        return out


class KDQueryEncoder(QueryEncoder):
    """A Pyserini ``QueryEncoder`` for a kd_pyserini card (BERT_Dot by default).

    Accepts the keyword arguments Pyserini's ``search.faiss`` passes (``encoder_dir``, ``tokenizer_name``,
    ``device``, ``prefix``, ``fp16``...), so Pyserini can build it from ``--encoder``.

    Args:
        encoder_dir: card name, hub id or model directory (Pyserini's name for it).
        device: see :func:`resolve_device`.
        precision: ``fp32``, ``fp16`` or ``bf16``; Pyserini's ``fp16=True`` means ``fp16`` (on CPU: ``bf16``).
        max_length: query truncation length (default: the card's, 30 for BERT_Dot).
        encoder: an already-loaded :class:`TextEncoder` to share (e.g. with a document encoder).
    """

    def __init__(self, encoder_dir: str | EncoderCard | None = None, tokenizer_name: str | None = None,
                 encoded_query_dir: str | None = None, device: str | None = None, precision: str = "fp32",
                 max_length: int | None = None, prefix: str | None = None, fp16: bool = False,
                 batch_size: int = 64, encoder: TextEncoder | None = None, **kwargs: Any):
        super().__init__(encoded_query_dir)
        if fp16 and precision == "fp32":
            precision = "fp16" if resolve_device(device).type == "cuda" else "bf16"
        if encoder is None and encoder_dir is not None:
            encoder = TextEncoder(encoder_dir, device=device, precision=precision, batch_size=batch_size)
        self.encoder = encoder
        self.has_model = encoder is not None
        if not self.has_model and not self.has_encoded_query:
            raise ValueError("KDQueryEncoder needs an encoder (name, hub id or directory) or encoded queries")
        self.card = encoder.card if encoder else None
        self.max_length = max_length or (self.card.query_max_length if self.card else None)
        self.prefix = prefix

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def _prep(self, queries: Sequence[str]) -> list[str]:
        return [f"{self.prefix} {q}" for q in queries] if self.prefix else list(queries)

    def encode(self, query: str, max_length: int | None = None, **kwargs: Any) -> np.ndarray:
        """One query → a 1-D float32 vector."""
        if not self.has_model:
            return super().encode(query)
        return self.encoder.embed(self._prep([query]), max_length or self.max_length)[0]

    def encode_batch(self, queries: Sequence[str], max_length: int | None = None,
                     batch_size: int | None = None) -> np.ndarray:
        """Many queries → a 2-D ``(n, dim)`` float32 array (batched, length-sorted)."""
        return self.encoder.embed(self._prep(queries), max_length or self.max_length, batch_size)


class KDDocumentEncoder(DocumentEncoder):
    """A Pyserini ``DocumentEncoder`` for a kd_pyserini card (BERT_Dot by default).

    ``encode(texts, titles=None)`` joins ``title + " " + text`` as Pyserini's ``AutoDocumentEncoder`` does and returns
    ``(n, dim)`` float32. Accepts Pyserini's ``encode`` keyword arguments (``max_length``, ``fp16``, ``add_sep``).
    """

    def __init__(self, model_name: str | EncoderCard | None = None, tokenizer_name: str | None = None,
                 device: str | None = None, precision: str = "fp32", max_length: int | None = None,
                 batch_size: int = 32, encoder: TextEncoder | None = None, **kwargs: Any):
        if encoder is None:
            if model_name is None:
                raise ValueError("KDDocumentEncoder needs model_name (card name, hub id or directory)")
            encoder = TextEncoder(model_name, device=device, precision=precision, batch_size=batch_size)
        self.encoder = encoder
        self.card = encoder.card
        self.max_length = max_length or self.card.passage_max_length
        self.has_model = True

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None, max_length: int | None = None,
               batch_size: int | None = None, **kwargs: Any) -> np.ndarray:
        """Passages (optionally with titles) → ``(n, dim)`` float32, in input order."""
        if titles is not None:
            texts = [f"{t} {x}" if t else x for t, x in zip(titles, texts)]
        return self.encoder.embed(list(texts), max_length or self.max_length, batch_size)


def get_query_encoder(name: str | EncoderCard, device: str | None = None, precision: str = "fp32",
                      max_length: int | None = None, **kwargs: Any) -> KDQueryEncoder:
    """A Pyserini ``QueryEncoder`` for an encoder name, hub id or model directory.

    Args:
        name: e.g. ``distilbert-dot`` (= TAS-B), ``distilbert-dot-margin-mse``, ``all-minilm-l6-v2``, a hub id or a
            local directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; default CUDA when present.
        precision: ``"fp32"`` (default), ``"fp16"`` or ``"bf16"``.
        max_length: query truncation (default: the card's).
    """
    return KDQueryEncoder(get_card(name), device=device, precision=precision, max_length=max_length, **kwargs)


def get_document_encoder(name: str | EncoderCard, device: str | None = None, precision: str = "fp32",
                         max_length: int | None = None, **kwargs: Any) -> KDDocumentEncoder:
    """A Pyserini ``DocumentEncoder`` for an encoder name, hub id or model directory (see :func:`get_query_encoder`)."""
    return KDDocumentEncoder(get_card(name), device=device, precision=precision, max_length=max_length, **kwargs)


# Pyserini picks an encoder class by the first key of its maps that is a substring of --encoder.
PYSERINI_KEYS = ("distilbert-dot", "all-minilm-l6-v2")


def _prepend(mapping: dict, key: str, value: Any) -> None:
    items = [(k, v) for k, v in mapping.items() if k != key]
    mapping.clear()
    mapping[key] = value
    mapping.update(items)


def register_with_pyserini(extra_keys: Sequence[str] = ()) -> None:
    """Make Pyserini's ``encode`` and ``search.faiss`` pick our classes for ``--encoder distilbert-dot...``.

    Our keys go first in ``pyserini.encode.query_encoder_class_map`` / ``document_encoder_class_map`` (the dicts
    ``pyserini.search.faiss`` also uses), so they win Pyserini's substring match. ``extra_keys`` (e.g. a full model
    path) are put first too, so a path that merely contains ``ance`` or ``dpr`` reaches our class.
    """
    import pyserini.encode as penc

    for key in (*PYSERINI_KEYS, *extra_keys):
        _prepend(penc.query_encoder_class_map, key.lower(), KDQueryEncoder)
        _prepend(penc.document_encoder_class_map, key.lower(), KDDocumentEncoder)
