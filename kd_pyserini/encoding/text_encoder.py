"""The shared encoding core: :class:`TextEncoder`, a tokenizer and a model on one device at one precision.

It turns texts into float32 vectors the way an encoder card says (pooling, normalisation); the Pyserini encoder
classes (:mod:`kd_pyserini.encoders`), dense indexing and dense search all call it. The fast paths it takes are
described in :mod:`kd_pyserini.encoding`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kd_pyserini.cards import EncoderCard, get_card
from kd_pyserini.encoding.batching import autocast, length_batches, place_model
from kd_pyserini.encoding.device import PRECISIONS, resolve_device
from kd_pyserini.encoding.int8 import quantize_int8
from kd_pyserini.encoding.loading import load_model
from kd_pyserini.encoding.pooling import pad_batch, pool
from kd_pyserini.errors import KdError

__all__ = ["TextEncoder", "NonFiniteVectorError"]

log = logging.getLogger(__name__)


class NonFiniteVectorError(KdError, ValueError):
    """The model produced NaN or infinite vectors: its weights are broken (e.g. a diverged training checkpoint).

    Attributes:
        model: where the model was loaded from.
        bad / total: how many of the texts of the call got a non-finite vector.
        first_index: the position of the first such text in the call's input.
    """

    def __init__(self, model: str, bad: int, total: int, first_index: int):
        self.model, self.bad, self.total, self.first_index = model, bad, total, first_index
        super().__init__(f"encoder {model} produced non-finite vectors (NaN/inf) for {bad} of {total} texts, first "
                         f"text #{first_index}: the weights are broken (a diverged checkpoint?)")


class TextEncoder:
    """The shared core: a tokenizer and a model, on one device at one precision, turning texts into vectors.

    Args:
        card: the encoder card (or a name / hub id / directory resolved with :func:`get_card`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when present.
        precision: ``"fp32"`` (default), ``"fp16"`` (CUDA only), ``"bf16"`` (CUDA, or CPU autocast), ``"int8"``
            (CPU only: dynamic int8 quantisation of the linear layers; the fast single-query option) or ``"auto"``
            (the fastest faithful one on this device: :mod:`kd_pyserini.encoding.precision`).
        batch_size: texts per forward pass (on CUDA: the batch holds up to ``batch_size * max_length`` tokens, so
            short texts go in larger batches).
        threads: CPU threads for torch (``torch.set_num_threads``, process-wide); ``None`` leaves torch's default
            (one per physical core).
    """

    #: texts tokenised and padded ahead of the GPU, per background chunk (CUDA path).
    cuda_chunk: int = 8192

    def __init__(self, card: EncoderCard | str, device: str | None = None, precision: str = "fp32",
                 batch_size: int = 32, threads: int | None = None):
        self.card = get_card(card)
        if self.card.note:
            log.warning(self.card.note)
        if precision in PRECISIONS or precision == "auto":  # auto resolved; an emulated explicit bf16 warns once
            from kd_pyserini.encoding.precision import resolve_precision

            precision = resolve_precision(precision, device, "encode").precision
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)} or auto")
        if precision == "int8":  # CPU only: checked before CUDA availability, and device=None means the CPU
            if device not in (None, "") and torch.device(device).type != "cpu":
                raise ValueError(f"precision='int8' is CPU only (dynamic int8 quantisation), not for device "
                                 f"{str(device)!r}; on CUDA use 'fp16' or 'bf16'")
            device = "cpu"
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; on CPU use 'bf16' (autocast) or 'fp32'")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, not {threads}")
            torch.set_num_threads(threads)
        self.precision = precision
        self.batch_size = batch_size
        self.tokenizer, model = load_model(self.card)
        if precision == "int8":
            model = quantize_int8(model, self.tokenizer)
        self.model = place_model(model, self.device, precision)
        self._fused_fwd = None  # decided here, like place_model's linear layers: the environment at construction
        if self.device.type == "cpu":
            from kd_pyserini.encoding.fused import fused_encoder

            self._fused_fwd = fused_encoder(self.model, precision)
        self.dimension = int(getattr(model.config, "hidden_size", None) or getattr(model.config, "dim"))
        if self.card.dimension is not None and self.card.dimension != self.dimension:
            raise ValueError(f"card {self.card.name} says dimension {self.card.dimension} but the model has "
                             f"{self.dimension}")
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._single_tokenizers: dict[int, Any] = {}
        self._single_lock = threading.Lock()

    def _check_finite(self, out: np.ndarray) -> np.ndarray:
        """``out`` itself, or :class:`NonFiniteVectorError` when a vector holds NaN/inf (one ``isfinite`` pass)."""
        if not np.isfinite(out).all():
            bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
            raise NonFiniteVectorError(self.card.model_id, int(bad.sum()), len(out), int(np.argmax(bad)))
        return out

    def _fused(self) -> Any | None:
        """The fused CPU forward (:mod:`kd_pyserini.encoding.fused`) chosen at construction for this model and
        precision; ``None`` where it does not apply (CUDA, int8, another architecture, ``KD_PYSERINI_FUSED=0`` or
        ``KD_PYSERINI_FAST_LINEAR=0`` when the encoder was made)."""
        return self._fused_fwd

    def _autocast(self) -> torch.autocast:
        return autocast(self.device, self.precision)

    def _tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _pad(self, ids: Sequence[Sequence[int]], pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_batch(ids, self._pad_id, pin=pin)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Token ids (and mask; ``None`` = no padding) → pooled, maybe normalised float32 vectors on the device."""
        input_ids = input_ids.to(self.device, non_blocking=True)
        if mask is not None:
            mask = mask.to(self.device, non_blocking=True)
        fused = self._fused()
        if fused is not None:
            hidden = fused(input_ids, mask, cls_only=self.card.pooling == "cls")
        else:
            with self._autocast():
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if mask is None:
            mask = torch.ones(input_ids.shape, dtype=torch.long, device=hidden.device)
        vec = pool(hidden.float(), mask, self.card.pooling)
        if self.card.normalize:
            vec = torch.nn.functional.normalize(vec, p=2, dim=-1)
        return vec

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], max_length: int, batch_size: int | None = None) -> np.ndarray:
        """Encode ``texts`` into a ``(n, dim)`` float32 array, in input order.

        The texts are tokenised once, sorted by token length (longest first) and batched, so each batch is padded
        only to its own longest text; the output is put back in the input order. On CUDA see :meth:`_embed_cuda`.

        Raises:
            NonFiniteVectorError: a vector holds NaN/inf (broken weights), naming the model.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        bs = batch_size or self.batch_size
        if self.device.type == "cuda":
            return self._check_finite(self._embed_cuda(texts, max_length, bs))
        ids = self._tokenize(texts, max_length)
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for idx in length_batches([len(x) for x in ids], bs):
            input_ids, mask = self._pad([ids[i] for i in idx])
            out[idx] = self._forward(input_ids, mask).cpu().numpy()
        return self._check_finite(out)

    # --- one text -----------------------------------------------------------------------------------------------

    def _single_tokenizer(self, max_length: int) -> Any | None:
        """A private copy of the Rust tokenizer truncating at ``max_length`` (``None`` for slow tokenizers).

        A copy, because the shared one's truncation and padding settings are rewritten by every ``tokenizer(...)``
        call; the copy adds the same special tokens and truncates the same way (checked in tests).
        """
        tok = self._single_tokenizers.get(max_length)
        if tok is None and max_length not in self._single_tokenizers:
            try:
                from tokenizers import Tokenizer

                backend = getattr(self.tokenizer, "backend_tokenizer", None)
                if backend is None or not getattr(self.tokenizer, "is_fast", False):
                    raise TypeError("not a fast tokenizer")
                tok = Tokenizer.from_str(backend.to_str())
                tok.no_padding()
                tok.enable_truncation(max_length)
            except Exception as e:  # noqa: BLE001  (fall back to the ordinary path)
                log.debug("no single-text tokenizer: %s", e)
                tok = None
            with self._single_lock:
                self._single_tokenizers[max_length] = tok
        return tok

    @torch.inference_mode()
    def embed_one(self, text: str, max_length: int) -> np.ndarray:
        """Encode one text into a 1-D float32 vector with the least per-call work (the single-query path).

        Same vector as ``embed([text], max_length)[0]``: one text needs no padding, so no attention mask is built.

        Raises:
            NonFiniteVectorError: the vector holds NaN/inf (broken weights), naming the model.
        """
        tok = self._single_tokenizer(max_length)
        if tok is None:
            return self.embed([text], max_length)[0]
        ids = tok.encode(text).ids
        input_ids = torch.tensor([ids], dtype=torch.long)
        return self._check_finite(self._forward(input_ids, None).cpu().numpy())[0]

    # --- CUDA -----------------------------------------------------------------------------------------------------

    def _token_batches(self, ids: list[list[int]], batch_size: int, max_length: int,
                       pin: bool) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Length-sorted batches holding at most ``batch_size * max_length`` tokens (padded), padded tensors."""
        return [(idx, *self._pad([ids[i] for i in idx], pin=pin))
                for idx in length_batches([len(x) for x in ids], batch_size, batch_size * max_length)]

    def _prepare_chunk(self, texts: Sequence[str], max_length: int, batch_size: int,
                       pin: bool) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        return self._token_batches(self._tokenize(texts, max_length), batch_size, max_length, pin)

    @torch.inference_mode()
    def _embed_cuda(self, texts: Sequence[str], max_length: int, batch_size: int,
                    pin: bool | None = None) -> np.ndarray:
        """The GPU path: token-budget batches, pinned host memory, tokenisation overlapped with the GPU.

        Texts are handled in chunks of :attr:`cuda_chunk`; while the GPU encodes one chunk, a background thread
        tokenises, sorts and pads the next into pinned memory (the Rust tokenizer releases the GIL). Vectors stay on
        the GPU until the chunk is done, then come back in one copy. Runs on CPU too (``pin=False``), which is how
        the tests check it.
        """
        from concurrent.futures import ThreadPoolExecutor

        pin = (self.device.type == "cuda") if pin is None else pin
        n = len(texts)
        chunk = max(1, int(self.cuda_chunk))
        out = np.empty((n, self.dimension), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=1) as pool_:
            future = pool_.submit(self._prepare_chunk, texts[0:chunk], max_length, batch_size, pin)
            for start in range(0, n, chunk):
                batches = future.result()
                if start + chunk < n:
                    future = pool_.submit(self._prepare_chunk, texts[start + chunk:start + 2 * chunk], max_length,
                                          batch_size, pin)
                vecs, where = [], []
                for idx, input_ids, mask in batches:
                    vecs.append(self._forward(input_ids, mask))
                    where.append(idx)
                block = torch.cat(vecs).cpu().numpy()
                out[start + np.concatenate(where)] = block
        return out
