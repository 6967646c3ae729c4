"""Encoder cards: what an encoder *is* (model id, pooling, similarity, lengths, dimension, published scores).

Cards are small TOML files in the top-level ``encoders/`` folder, shipped in the wheel as ``kd_pyserini._cards``.
:func:`get_card` accepts a card name or alias (``distilbert-dot``, ``distilbert-dot-tas-b``, ...), a hub id
(``sebastian-hofstaetter/distilbert-dot-tas_b-b256-msmarco``) or a local model directory. A directory may carry its
own card as ``kd_pyserini_card.toml`` (``kd-train`` writes one); a directory without one gets CLS pooling and dot
product, and :attr:`EncoderCard.note` says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from kd_pyserini.errors import KdError

__all__ = ["EncoderCard", "UnknownEncoderError", "get_card", "list_cards", "CARD_FILENAME", "write_card"]

log = logging.getLogger(__name__)
CARD_FILENAME = "kd_pyserini_card.toml"
POOLINGS = ("cls", "mean")
SIMILARITIES = ("dot", "cosine")


class UnknownEncoderError(KdError, ValueError):
    """The encoder name is neither a card, a hub id, nor an existing directory."""


@dataclass(frozen=True)
class EncoderCard:
    """Everything needed to turn text into vectors the way the model was trained.

    Attributes:
        name: the card's name (``distilbert-dot-tas-b``).
        model_id: hub id or local directory of the weights.
        pooling: ``cls`` (BERT_Dot) or ``mean`` (sentence-transformers).
        similarity: ``dot`` (no normalisation) or ``cosine`` (vectors L2-normalised, searched by inner product).
        query_max_length / passage_max_length: truncation lengths in tokens.
        dimension: vector size (``None`` when unknown until the model is loaded).
        aliases: other names accepted for this card.
        local_package: an installed Python package holding the weights (looked up offline before the hub).
        published: ``{benchmark: {measure: value, "source": str}}``.
        note: how the card was derived when it was not found (e.g. a bare directory).
    """

    name: str
    model_id: str
    pooling: str = "cls"
    similarity: str = "dot"
    query_max_length: int = 30
    passage_max_length: int = 200
    dimension: int | None = None
    architecture: str | None = None
    aliases: tuple[str, ...] = ()
    local_package: str | None = None
    pyserini_condition: str | None = None
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"card {self.name}: pooling {self.pooling!r} is not one of {POOLINGS}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"card {self.name}: similarity {self.similarity!r} is not one of {SIMILARITIES}")

    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalised (cosine similarity)."""
        return self.similarity == "cosine"

    def model_location(self) -> str:
        """Where to load the weights from: an installed package's folder if any, else ``model_id``."""
        if self.local_package and find_spec(self.local_package) is not None:
            import importlib

            mod = importlib.import_module(self.local_package)
            path = mod.get_model_path() if hasattr(mod, "get_model_path") else Path(mod.__file__).parent / "model"
            if Path(path).is_dir():
                return str(path)
        return self.model_id

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (what run sidecars and index metadata record)."""
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        return d

    def replace(self, **changes: Any) -> "EncoderCard":
        return dataclasses.replace(self, **changes)


def _from_mapping(data: dict[str, Any], **extra: Any) -> EncoderCard:
    known = {f.name for f in dataclasses.fields(EncoderCard)}
    kwargs = {k: v for k, v in data.items() if k in known}
    kwargs["aliases"] = tuple(kwargs.get("aliases", ()))
    kwargs.update(extra)
    return EncoderCard(**kwargs)


@cache
def list_cards() -> dict[str, EncoderCard]:
    """All shipped cards by name."""
    out: dict[str, EncoderCard] = {}
    for entry in resources.files("kd_pyserini._cards").iterdir():
        if entry.name.endswith(".toml"):
            card = _from_mapping(tomllib.loads(entry.read_text(encoding="utf-8")))
            out[card.name] = card
    return out


def _lookup(name: str) -> EncoderCard | None:
    key = name.strip().lower()
    for card in list_cards().values():
        if key == card.name.lower() or key in (a.lower() for a in card.aliases) or key == card.model_id.lower():
            return card
    return None


def _card_for_directory(path: Path) -> EncoderCard:
    own = path / CARD_FILENAME
    if own.is_file():
        data = tomllib.loads(own.read_text(encoding="utf-8"))
        data.setdefault("name", path.name)
        return _from_mapping(data, model_id=str(path))
    cfg: dict[str, Any] = {}
    if (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
    # A sentence-transformers folder says how it pools and whether it normalises.
    pool_cfg = path / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        p = json.loads(pool_cfg.read_text())
        pooling = "mean" if p.get("pooling_mode_mean_tokens") else "cls"
        modules = json.loads((path / "modules.json").read_text()) if (path / "modules.json").is_file() else []
        normalize = any("Normalize" in m.get("type", "") for m in modules)
        st_len = json.loads((path / "sentence_bert_config.json").read_text()).get("max_seq_length", 256) \
            if (path / "sentence_bert_config.json").is_file() else 256
        return EncoderCard(name=path.name, model_id=str(path), pooling=pooling,
                           similarity="cosine" if normalize else "dot", query_max_length=st_len,
                           passage_max_length=st_len, dimension=cfg.get("hidden_size") or cfg.get("dim"),
                           architecture=cfg.get("model_type"),
                           note="no kd_pyserini card: pooling and normalisation read from the sentence-transformers "
                                "configuration")
    return EncoderCard(name=path.name, model_id=str(path), dimension=cfg.get("hidden_size") or cfg.get("dim"),
                       architecture=cfg.get("model_type"),
                       note=f"no kd_pyserini card in {path}: assuming BERT_Dot (CLS pooling, dot product, "
                            "query/passage max length 30/200); add a kd_pyserini_card.toml to change that")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def get_card(name_or_path: str | EncoderCard) -> EncoderCard:
    """Resolve an encoder name, hub id or local directory to its card.

    Args:
        name_or_path: card name or alias, hub id (``owner/model``) or a local model directory.

    Returns:
        The card. Unknown hub ids and bare directories get a BERT_Dot default (CLS, dot) with ``note`` set.

    Raises:
        UnknownEncoderError: not a card, not a hub id, not a directory (the message lists the known cards).
        FileNotFoundError: it looks like a path but does not exist.
    """
    if isinstance(name_or_path, EncoderCard):
        return name_or_path
    name = str(name_or_path)
    card = _lookup(name)
    if card is not None:
        return card
    path = Path(name).expanduser()
    if path.is_dir():
        card = _card_for_directory(path)
        if card.note:
            log.warning(card.note)
        return card
    if _looks_like_path(name):
        raise FileNotFoundError(f"model directory {name} does not exist; fix the path, or use one of the encoder "
                                f"names: {', '.join(_known_names())}")
    if name.count("/") == 1 and " " not in name:
        return EncoderCard(name=name, model_id=name,
                           note=f"{name} has no kd_pyserini card: assuming BERT_Dot (CLS pooling, dot product)")
    raise UnknownEncoderError(f"unknown encoder {name!r}; known encoders: {', '.join(_known_names())} "
                              "(or give a Hugging Face hub id 'owner/model' or a local model directory)")


def _known_names() -> list[str]:
    names: list[str] = []
    for card in list_cards().values():
        names.append(card.name + (f" ({', '.join(card.aliases)})" if card.aliases else ""))
    return sorted(names)


def write_card(card: EncoderCard, directory: str | Path) -> Path:
    """Write ``card`` into ``directory/kd_pyserini_card.toml`` (used by kd-train checkpoints and indexes)."""
    lines = []
    for key in ("name", "model_id", "architecture", "pooling", "similarity", "query_max_length",
                "passage_max_length", "dimension"):
        value = getattr(card, key)
        if value is None:
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    out = Path(directory) / CARD_FILENAME
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
