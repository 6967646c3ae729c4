"""Loading an encoder card's tokenizer and model, with one-line errors when the weights cannot be found.

An offline machine fails at once (:func:`hub_reachable`) instead of retrying the hub for a minute.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from kd_pyserini.cards import EncoderCard
from kd_pyserini.errors import KdError

__all__ = ["ModelLoadError", "load_model", "hub_cached", "hub_reachable"]


class ModelLoadError(KdError, OSError):
    """The model weights or tokenizer could not be loaded; the message says from where and how to fix it."""


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
    if not is_dir and not hub_cached(location) and not hub_reachable():
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


def hub_cached(repo_id: str) -> bool:
    """Whether ``repo_id``'s config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001  (malformed ids etc.: let from_pretrained report)
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub, so an offline machine fails at once instead of retrying for a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False
