"""What identifies the model that built an index: a SHA-256 over its weight files, and its position limit.

Two models can share a name (every training run has a ``checkpoint-30``) and still have different weights, so an
index records :func:`weights_fingerprint` of the encoder that built it and :func:`~kd_pyserini.index_meta.
check_index_compatible` compares it with the query encoder's; passage stores and in-batch teachers record it too
(:func:`weights_sha256`). It lives with the models (``encoding/``), below every room that uses it. The fingerprint
hashes the bytes of the files the weights are loaded from (``*.safetensors``, else ``pytorch_model*.bin`` and the
like), with their names and sizes:

* it does not depend on ``--precision`` or the device (the files are the same however they are loaded);
* a local folder, a hub model in the Hugging Face cache and a ``hf download --local-dir`` copy of it give the same
  fingerprint (the same files);
* it costs one read of the weights (~0.2 s for a 265 MB DistilBERT), once per process (cached by path, size and
  modification time).

An encoder whose weight files cannot be found (an encoder object without a model folder, a hub id not in the cache)
has no fingerprint (``None``); comparisons then fall back to the names. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from kd_pyserini.cards import EncoderCard, get_card

__all__ = ["model_dir", "weight_files", "weights_fingerprint", "weights_sha256", "position_limit", "short",
           "FINGERPRINT_METHOD"]

FINGERPRINT_METHOD = "sha256 over the model's weight files (name, size, bytes)"
#: files beside the weights that are not weights (written by training loops).
_NOT_WEIGHTS = ("training_args", "optimizer", "scheduler", "rng_state", "trainer_state", "scaler")
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")
_cache: dict[tuple[Any, ...], dict[str, Any]] = {}


def model_dir(card: EncoderCard | str) -> Path | None:
    """The local folder holding a card's ``config.json`` and weights: its model directory, its installed package's
    folder, or its snapshot in the Hugging Face cache; ``None`` when there is none (nothing is downloaded)."""
    card = get_card(card)
    try:
        location = card.model_location()
    except Exception:  # noqa: BLE001  (a broken local package: no folder)
        return None
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if location.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(location, "config.json")
    except Exception:  # noqa: BLE001  (malformed id, no huggingface_hub)
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def weight_files(folder: Path) -> list[Path]:
    """The files a model's weights are loaded from: the ``*.safetensors`` when there are any (what transformers
    prefers), else ``*.bin``/``*.pt``/... that are not training state; sorted by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    if safetensors:
        return safetensors
    return [p for p in files if p.suffix in _OTHER_WEIGHTS and not p.name.startswith(_NOT_WEIGHTS)]


def weights_fingerprint(card: EncoderCard | str) -> dict[str, Any] | None:
    """``{"sha256", "files": [{"name", "size"}], "method"}`` of a card's weight files, or ``None`` when they cannot
    be found locally. Cached per process by the files' paths, sizes and modification times."""
    folder = model_dir(card)
    if folder is None:
        return None
    files = weight_files(folder)
    if not files:
        return None
    stats = [(f, f.stat()) for f in files]
    key = tuple((str(f.resolve()), st.st_size, st.st_mtime_ns) for f, st in stats)
    if key not in _cache:
        h = hashlib.sha256()
        for f, st in stats:
            h.update(f"{f.name}\0{st.st_size}\0".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(8 << 20), b""):
                    h.update(block)
        _cache[key] = {"sha256": h.hexdigest(), "files": [{"name": f.name, "size": st.st_size} for f, st in stats],
                       "method": FINGERPRINT_METHOD}
    return dict(_cache[key])


def weights_sha256(card: Any) -> str | None:
    """The SHA-256 of :func:`weights_fingerprint` for a card of any kind (bi-encoder, cross-encoder, ColBERT,
    PreTTR: only the weights' location matters), ``None`` when the weight files are not on this machine's disk."""
    if not isinstance(card, EncoderCard):
        card = EncoderCard(name=card.name, model_id=card.model_location())
    fp = weights_fingerprint(card)
    return fp["sha256"] if fp else None


def position_limit(card: EncoderCard | str, model: Any = None) -> int | None:
    """The longest input in tokens the model can take (``max_position_embeddings``; minus RoBERTa's 2-position
    offset), from a loaded ``model``'s config or the card's ``config.json``; ``None`` when unknown."""
    cfg: dict[str, Any] = {}
    if model is not None and getattr(model, "config", None) is not None:
        cfg = model.config.to_dict() if hasattr(model.config, "to_dict") else vars(model.config)
    else:
        folder = model_dir(card)
        if folder is not None and (folder / "config.json").is_file():
            try:
                cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return None
    limit = cfg.get("max_position_embeddings")
    if not isinstance(limit, int) or limit <= 0:
        return None
    if cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        limit -= 2
    return limit


def short(fp: dict[str, Any] | str | None) -> str:
    """The first 12 hex digits of a fingerprint, for messages (``unknown`` when there is none)."""
    if isinstance(fp, dict):
        fp = fp.get("sha256")
    return fp[:12] if fp else "unknown"
