"""Turn text into vectors the way an encoder card says, as Pyserini ``QueryEncoder`` / ``DocumentEncoder`` objects.

BERT_Dot (TAS-B, Margin-MSE): one shared DistilBERT for queries and passages, the CLS vector, no normalisation,
dot product; query max length 30, passage max length 200 (the authors' training settings). Cards with
``pooling = "mean"`` / ``similarity = "cosine"`` (all-MiniLM-L6-v2) use masked mean pooling and L2 normalisation.

The encoder classes subclass Pyserini's, so they plug into ``FaissSearcher`` and ``HybridSearcher`` unchanged, and
:func:`register_with_pyserini` makes Pyserini's own command-line tools pick them for ``--encoder distilbert-dot...``.

Fast paths (same API, measured in PERFORMANCE.md):

* every forward runs under ``inference_mode`` on texts tokenised once, sorted by length and padded per batch;
* on CPU, ``nn.Linear`` layers run oneDNN's matmul on prepacked weights instead of the default BLAS sgemm (2-3x faster
  on AMD CPUs, same fp32 results up to float rounding; ``KD_PYSERINI_FAST_LINEAR=0`` turns it off). With
  ``precision="bf16"`` the same layers take pre-cast bf16 weights (what CPU autocast computes, without re-casting the
  weights at every call);
* ``precision="int8"`` (CPU only): torch dynamic int8 quantisation of the ``nn.Linear`` layers (per-channel
  weights, 8-bit activations on VNNI CPUs, SmoothQuant-style smoothing calibrated on a few built-in texts), the
  smallest single-query option (all-MiniLM-L6-v2 query vectors within cosine 0.99 of fp32);
* one query at a time (:meth:`KDQueryEncoder.encode`) skips the batching machinery: a private Rust tokenizer, no
  padding, no attention mask;
* on CUDA, batches are filled up to a token budget (``batch_size * max_length``) over length-sorted texts, and the
  next chunk of texts is tokenised and padded into pinned memory in a background thread while the GPU runs.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyserini.encode import DocumentEncoder, QueryEncoder

from kd_pyserini.cards import EncoderCard, get_card

__all__ = ["PRECISIONS", "resolve_device", "TextEncoder", "KDQueryEncoder", "KDDocumentEncoder",
           "get_query_encoder", "get_document_encoder", "register_with_pyserini", "pool", "ModelLoadError",
           "fast_linear_available", "use_fast_linear", "quantize_int8"]

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


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


class _FastLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose CPU inference forward is oneDNN's matmul on a prepacked weight.

    The default CPU ``nn.Linear`` calls the BLAS sgemm (MKL), which on AMD CPUs reaches under half of what oneDNN's
    matmul reaches on the same cores. Only the forward without autograd takes the fast route; with gradients (training)
    or on another device it is the ordinary ``F.linear``. The packed weight is rebuilt when the parameter is changed
    in place or replaced (``load_state_dict``, an optimiser step), and is left out of copies and pickles.
    ``_kd_dtype`` is ``torch.bfloat16`` for the bf16 path (weights cast once, input cast at each call, bf16 output:
    what CPU autocast computes).
    """

    _kd_dtype: torch.dtype = torch.float32

    def _kd_pack(self) -> tuple:
        w = self.weight.detach()
        b = None if self.bias is None else self.bias.detach()
        if self._kd_dtype != w.dtype:
            w = w.to(self._kd_dtype)
            b = None if b is None else b.to(self._kd_dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), None) if _PACK_WEIGHTS else w.contiguous()
        key = (self.weight.data_ptr(), self.weight._version,
               None if self.bias is None else (self.bias.data_ptr(), self.bias._version))
        self.__dict__["_kd_cache"] = (key, packed, b)
        return self.__dict__["_kd_cache"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        cache = self.__dict__.get("_kd_cache")
        key = (self.weight.data_ptr(), self.weight._version,
               None if self.bias is None else (self.bias.data_ptr(), self.bias._version))
        if cache is None or cache[0] != key:
            cache = self._kd_pack()
        if x.dtype != self._kd_dtype:
            x = x.to(self._kd_dtype)
        return torch.ops.mkldnn._linear_pointwise(x, cache[1], cache[2], "none", [], "")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_kd_cache", None)  # packed oneDNN tensors cannot be copied or pickled; rebuilt on first use
        return state


_PACK_WEIGHTS = True
_FAST_LINEAR_OK: dict[torch.dtype, bool] = {}


def fast_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build runs oneDNN linear on CPU at ``dtype`` with the same results as ``F.linear``.

    Checked once per dtype on a small random layer; ``KD_PYSERINI_FAST_LINEAR=0`` forces ``False``. bf16 also needs
    a CPU with native bf16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) to be worth it.
    """
    if os.environ.get("KD_PYSERINI_FAST_LINEAR", "1").lower() in ("0", "false", "no", "off"):
        return False
    if dtype not in _FAST_LINEAR_OK:
        ok = False
        try:
            if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
                if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
                    raise RuntimeError("no native bf16")
                g = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(5, 48, generator=g), torch.randn(24, 48, generator=g),
                           torch.randn(24, generator=g))
                with torch.inference_mode():
                    ref = torch.nn.functional.linear(x.to(dtype), w.to(dtype), b.to(dtype)).float()
                    pw = torch.ops.mkldnn._reorder_linear_weight(w.to(dtype), None) if _PACK_WEIGHTS else w.to(dtype)
                    got = torch.ops.mkldnn._linear_pointwise(x.to(dtype), pw, b.to(dtype), "none", [], "").float()
                tol = 1e-4 if dtype == torch.float32 else 0.1
                ok = got.shape == ref.shape and bool((got - ref).abs().max() <= tol * ref.abs().max())
        except Exception as e:  # noqa: BLE001  (any failure: keep the ordinary path)
            log.debug("oneDNN linear unavailable for %s: %s", dtype, e)
            ok = False
        _FAST_LINEAR_OK[dtype] = ok
    return _FAST_LINEAR_OK[dtype]


def use_fast_linear(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Switch the plain ``nn.Linear`` layers of ``model`` to :class:`_FastLinear` (in place); returns how many.

    Parameters and ``state_dict`` are untouched; nothing happens when :func:`fast_linear_available` says no.
    """
    if not fast_linear_available(dtype):
        return 0
    n = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear or type(module) is _FastLinear:
            module.__class__ = _FastLinear
            module._kd_dtype = dtype
            module.__dict__.pop("_kd_cache", None)
            n += 1
    return n


#: Texts that calibrate the int8 path's smoothing factors (which input channels of each linear layer carry large
#: activations). The outlier channels of BERT-style models are a property of the weights, not of the text, so a few
#: generic queries and passages find them; the factors are computed once, when the int8 encoder is made.
CALIBRATION_TEXTS = (
    "what is the daily life of thai people",
    "how long does it take to become a registered nurse",
    "causes of high blood pressure in young adults",
    "who founded the roman empire",
    "define photosynthesis",
    "what is the population of canada in 2019",
    "is caffeine safe during pregnancy",
    "how do vaccines train the immune system",
    "The Manhattan Project was a research and development undertaking during World War II that produced the first "
    "nuclear weapons. It was led by the United States with the support of the United Kingdom and Canada.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make glucose and "
    "oxygen. It takes place mainly in the chloroplasts of leaf cells.",
    "A registered nurse must complete an accredited nursing program, which takes two to four years, and pass the "
    "national licensing examination before practising.",
    "Interest rates on a 30-year fixed mortgage rose to 4.5% in March, the highest level since 2011, according to "
    "figures released on Thursday.",
    "Symptoms of the flu include fever, cough, sore throat, muscle aches and fatigue; most people recover within a "
    "week without treatment.",
    "The Eiffel Tower, completed in 1889 for the World's Fair, is 330 metres tall and was the tallest man-made "
    "structure in the world for 41 years.",
    "Mutations in the BRCA1 gene increase the risk of breast and ovarian cancer; carriers may be offered earlier "
    "and more frequent screening.",
    "To reset your router, hold the reset button for ten seconds until the lights blink, then wait two minutes "
    "for it to restart.",
)


class _Smoothed(torch.nn.Module):
    """``linear(x / s)`` with ``linear``'s weight columns multiplied by ``s``: the same function, with the input's
    large channels scaled down and the weights' scaled up, so per-tensor int8 activations lose less
    (SmoothQuant, Xiao et al. 2023)."""

    def __init__(self, linear: torch.nn.Module, inv_scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)


def _activation_ranges(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str],
                       max_length: int = 256) -> dict[torch.nn.Module, torch.Tensor]:
    """Per input channel, the largest ``|x|`` each ``nn.Linear`` of ``model`` sees on ``texts`` (one text per call:
    no padding)."""
    ranges: dict[torch.nn.Module, torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: tuple) -> None:
        x = args[0].detach().float()
        m = x.abs().reshape(-1, x.shape[-1]).amax(0)
        ranges[module] = m if module not in ranges else torch.maximum(ranges[module], m)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            for text in texts:
                ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
                model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return ranges


def quantize_int8(model: torch.nn.Module, tokenizer: Any | None = None,
                  calibration: Sequence[str] | None = None, alpha: float = 0.65) -> torch.nn.Module:
    """``model`` with its ``nn.Linear`` layers dynamically quantised to int8 (CPU inference only).

    Weights are int8 per output channel; activations are quantised per call, per tensor (``torch.ao`` dynamic
    quantisation, fbgemm/x86 kernels), with all 8 bits on CPUs with VNNI (torch's default is 7). With a
    ``tokenizer``, each layer is first smoothed (SmoothQuant, migration strength ``alpha``) from activation ranges
    measured on ``calibration`` (default :data:`CALIBRATION_TEXTS`). On all-MiniLM-L6-v2 (DL19+DL20 queries), torch's
    default recipe (per-tensor weights, 7-bit activations) gives query cosines to fp32 down to 0.91; per-channel
    weights + 8-bit activations 0.990; + smoothing (alpha 0.65) 0.997. The model is modified in place and returned.
    """
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # pragma: no cover  (very old or very new torch)
        raise ValueError("precision='int8' needs torch.ao.quantization.quantize_dynamic, which this torch lacks; "
                         "use 'bf16' or 'fp32'") from e
    for module in model.modules():  # quantize_dynamic matches nn.Linear by exact type
        if type(module) is _FastLinear:
            module.__class__ = torch.nn.Linear
            module.__dict__.pop("_kd_cache", None)
    if tokenizer is not None:
        ranges = _activation_ranges(model, tokenizer, list(calibration or CALIBRATION_TEXTS))
        parents = [(parent, name, child) for parent in model.modules()
                   for name, child in parent.named_children() if child in ranges]
        with torch.no_grad():
            for parent, name, child in parents:
                w = child.weight
                act = ranges[child].clamp(min=1e-5)
                wmax = w.abs().amax(0).float().clamp(min=1e-5)
                scale = (act.pow(alpha) / wmax.pow(1 - alpha)).clamp(min=1e-5)
                w.mul_(scale.to(w.dtype))
                setattr(parent, name, _Smoothed(child, (1.0 / scale).to(w.dtype)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice and the quantisation notes
        model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    if _full_range_int8():
        import torch.ao.nn.quantized.dynamic as nnqd

        for module in model.modules():
            if type(module) is nnqd.Linear:
                module.__class__ = _Int8Linear
    return model


def _full_range_int8() -> bool:
    """Whether activations may use all 8 bits: x86 kernels with VNNI accumulate u8*s8 in int32 without the int16
    saturation that makes torch default to 7-bit activations (``reduce_range``)."""
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False


try:
    from torch.ao.nn.quantized.dynamic import Linear as _DynamicQuantizedLinear

    class _Int8Linear(_DynamicQuantizedLinear):
        """torch's dynamic int8 linear with 8-bit (not 7-bit) activations; used on CPUs with VNNI only."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                      reduce_range=False).to(x.dtype)
except ImportError:  # pragma: no cover
    _Int8Linear = None  # type: ignore[assignment,misc]


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
            f"machine with internet run 'hf download {location} --local-dir DIR' and pass DIR as the "
            "encoder, or use the offline 'all-minilm-l6-v2'")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModel.from_pretrained(location)
    except (OSError, ValueError) as e:
        if is_dir:
            raise ModelLoadError(f"could not load the model in {location}: {str(e).splitlines()[0]}") from e
        raise ModelLoadError(
            f"could not load {location!r} from the Hugging Face hub ({type(e).__name__}: no network, or no such "
            f"model). Fix: on a machine with internet run 'hf download {location} --local-dir DIR' and "
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
        precision: ``"fp32"`` (default), ``"fp16"`` (CUDA only), ``"bf16"`` (CUDA, or CPU autocast) or ``"int8"``
            (CPU only: dynamic int8 quantisation of the linear layers; the fast single-query option).
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
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
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
        if self.device.type == "cuda" and precision in ("fp16", "bf16"):
            model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        if precision == "int8":
            model = quantize_int8(model, self.tokenizer)
        elif self.device.type == "cpu":
            use_fast_linear(model, torch.bfloat16 if precision == "bf16" else torch.float32)
        self.model = model.to(self.device)
        self.dimension = int(getattr(model.config, "hidden_size", None) or getattr(model.config, "dim"))
        if self.card.dimension is not None and self.card.dimension != self.dimension:
            raise ValueError(f"card {self.card.name} says dimension {self.card.dimension} but the model has "
                             f"{self.dimension}")
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._single_tokenizers: dict[int, Any] = {}
        self._single_lock = threading.Lock()

    def _autocast(self):
        if self.precision == "bf16" and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _pad(self, ids: Sequence[Sequence[int]], pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        input_ids, mask = torch.from_numpy(input_ids), torch.from_numpy(mask)
        if pin:
            input_ids, mask = input_ids.pin_memory(), mask.pin_memory()
        return input_ids, mask

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Token ids (and mask; ``None`` = no padding) → pooled, maybe normalised float32 vectors on the device."""
        input_ids = input_ids.to(self.device, non_blocking=True)
        if mask is not None:
            mask = mask.to(self.device, non_blocking=True)
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
        """
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        bs = batch_size or self.batch_size
        if self.device.type == "cuda":
            return self._embed_cuda(texts, max_length, bs)
        ids = self._tokenize(texts, max_length)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            input_ids, mask = self._pad([ids[i] for i in idx])
            out[idx] = self._forward(input_ids, mask).cpu().numpy()
        return out

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
        """
        tok = self._single_tokenizer(max_length)
        if tok is None:
            return self.embed([text], max_length)[0]
        ids = tok.encode(text).ids
        input_ids = torch.tensor([ids], dtype=torch.long)
        return self._forward(input_ids, None)[0].cpu().numpy()

    # --- CUDA -----------------------------------------------------------------------------------------------------

    def _token_batches(self, ids: list[list[int]], batch_size: int, max_length: int,
                       pin: bool) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Length-sorted batches holding at most ``batch_size * max_length`` tokens (padded), padded tensors."""
        order = np.argsort([-len(x) for x in ids], kind="stable")
        budget = max(batch_size * max_length, 1)
        batches = []
        start = 0
        while start < len(order):
            width = max(len(ids[order[start]]), 1)  # longest first: the first text sets the padded width
            size = max(1, min(budget // width, len(order) - start))
            idx = order[start:start + size]
            batches.append((idx, *self._pad([ids[i] for i in idx], pin=pin)))
            start += size
        return batches

    def _prepare_chunk(self, texts: Sequence[str], max_length: int, batch_size: int, pin: bool):
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


class KDQueryEncoder(QueryEncoder):
    """A Pyserini ``QueryEncoder`` for a kd_pyserini card (BERT_Dot by default).

    Accepts the keyword arguments Pyserini's ``search.faiss`` passes (``encoder_dir``, ``tokenizer_name``,
    ``device``, ``prefix``, ``fp16``...), so Pyserini can build it from ``--encoder``.

    Args:
        encoder_dir: card name, hub id or model directory (Pyserini's name for it).
        device: see :func:`resolve_device`.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8`` (CPU only, the fastest single-query option);
            Pyserini's ``fp16=True`` means ``fp16`` (on CPU: ``bf16``).
        max_length: query truncation length (default: the card's, 30 for BERT_Dot).
        encoder: an already-loaded :class:`TextEncoder` to share (e.g. with a document encoder).
        threads: CPU threads for torch (process-wide), ``None`` for torch's default.
    """

    def __init__(self, encoder_dir: str | EncoderCard | None = None, tokenizer_name: str | None = None,
                 encoded_query_dir: str | None = None, device: str | None = None, precision: str = "fp32",
                 max_length: int | None = None, prefix: str | None = None, fp16: bool = False,
                 batch_size: int = 64, encoder: TextEncoder | None = None, threads: int | None = None,
                 **kwargs: Any):
        super().__init__(encoded_query_dir)
        if fp16 and precision == "fp32":
            precision = "fp16" if resolve_device(device).type == "cuda" else "bf16"
        if encoder is None and encoder_dir is not None:
            encoder = TextEncoder(encoder_dir, device=device, precision=precision, batch_size=batch_size,
                                  threads=threads)
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
        """One query → a 1-D float32 vector (the single-text fast path: no batching, padding or mask)."""
        if not self.has_model:
            return super().encode(query)
        return self.encoder.embed_one(f"{self.prefix} {query}" if self.prefix else query,
                                      max_length or self.max_length)

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
                 batch_size: int = 32, encoder: TextEncoder | None = None, threads: int | None = None,
                 **kwargs: Any):
        if encoder is None:
            if model_name is None:
                raise ValueError("KDDocumentEncoder needs model_name (card name, hub id or directory)")
            encoder = TextEncoder(model_name, device=device, precision=precision, batch_size=batch_size,
                                  threads=threads)
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
        precision: ``"fp32"`` (default), ``"fp16"`` (CUDA), ``"bf16"`` or ``"int8"`` (CPU only).
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
