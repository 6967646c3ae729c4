"""The kinds of cards, in one place, and the cards of the re-rankers that read query and passage apart first.

:data:`CARD_KINDS` lists every ``kind`` a card TOML can have; :data:`RERANKER_CARD_KINDS` the re-ranker kinds (the
model family of Hofstätter et al. 2020, arXiv 2010.02666): ``cross-encoder`` (BERT_CAT), ``late-interaction``
(ColBERT, Khattab & Zaharia 2020: :class:`ColBERTCard`) and ``split`` (PreTTR, MacAvaney et al. 2020:
:class:`PreTTRCard`). :mod:`kd_pyserini.cards` resolves names, hub ids and folders of every kind (and re-exports what
is here); :data:`kd_pyserini.encoding.rerankers.RERANKER_KINDS` maps each re-ranker kind to its constructor.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Any

__all__ = ["CARD_FILENAME", "RERANKER_CARD_KINDS", "CARD_KINDS", "TokenInteractionCard", "ColBERTCard",
           "PreTTRCard", "TOKEN_CARD_TYPES", "list_token_cards", "token_lookup", "token_directory_kind",
           "token_card_for_directory", "model_location", "read_json"]

CARD_FILENAME = "kd_pyserini_card.toml"
#: ``kind`` of a re-ranker card TOML: ``cross-encoder`` (:class:`CrossEncoderCard`), ``late-interaction``
#: (:class:`ColBERTCard`) and ``split`` (:class:`PreTTRCard`).
RERANKER_CARD_KINDS = ("cross-encoder", "late-interaction", "split")
#: every ``kind`` of a card TOML: bi-encoders (:class:`EncoderCard`, the default) and the re-ranker kinds.
CARD_KINDS = ("bi-encoder",) + RERANKER_CARD_KINDS


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or ``{}`` when it is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_location(card: Any) -> str:
    """Where to load a card's weights from: an installed package's folder if any, else ``model_id``."""
    if card.local_package and find_spec(card.local_package) is not None:
        import importlib

        mod = importlib.import_module(card.local_package)
        path = mod.get_model_path() if hasattr(mod, "get_model_path") else Path(mod.__file__).parent / "model"
        if Path(path).is_dir():
            return str(path)
    return card.model_id

@dataclass(frozen=True)
class TokenInteractionCard:
    """What ColBERT and PreTTR cards share: query and passage are tokenised apart (``[CLS] text [SEP]`` each), so the
    passage side can be computed once and stored (:mod:`kd_pyserini.index.passage_store`).

    Attributes:
        name, model_id, architecture, aliases, local_package, published, note: as for :class:`EncoderCard`.
        query_max_length / passage_max_length: truncation lengths in tokens, special tokens included (the paper's
            training lengths, 30 / 200).
        query_mask_tokens: ``[MASK]`` tokens appended to every query after its ``[SEP]`` (attention 1): 8 in the
            authors' notebooks, "regardless of batch-size" (Hofstätter et al. 2020, arXiv 2010.02666).
        tokenizer: where the tokenizer comes from when the weights folder has none (the base model).
    """

    name: str
    model_id: str
    query_max_length: int = 30
    passage_max_length: int = 200
    query_mask_tokens: int = 8
    tokenizer: str | None = None
    architecture: str | None = None
    aliases: tuple[str, ...] = ()
    local_package: str | None = None
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None

    kind = "token-interaction"

    def __post_init__(self) -> None:
        if self.query_max_length < 3 or self.passage_max_length < 3:
            raise ValueError(f"card {self.name}: query/passage max lengths must be >= 3 tokens")
        if self.query_mask_tokens < 0:
            raise ValueError(f"card {self.name}: query_mask_tokens must be >= 0")

    model_location = model_location

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        d["kind"] = self.kind
        return d

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ColBERTCard(TokenInteractionCard):
    """ColBERT (Khattab & Zaharia 2020) as Hofstätter et al. 2020 train it: a DistilBERT whose last hidden states pass
    one ``Linear(hidden, compression_dim)`` (``compressor``); the score sums, over the query's tokens, the largest dot
    product with any passage token (config ``model_type: "ColBERT"``; weights ``bert_model.*`` and ``compressor.*``).

    ``compression_dim``: the token vector size (``None``: read from the checkpoint).
    """

    compression_dim: int | None = None
    kind = "late-interaction"


@dataclass(frozen=True)
class PreTTRCard(TokenInteractionCard):
    """PreTTR (MacAvaney et al. 2020) as Hofstätter et al. 2020 train it: a DistilBERT whose first ``join_layer_idx``
    layers read the query and the passage (without its ``[CLS]``, positions offset by the query's length) apart and
    whose remaining layers read them concatenated; score = ``Linear(dim, 1, bias=False)`` on position 0 (weights
    ``embeddings.*``, ``transformer.layer.*``, ``_classification_layer.weight``)."""

    join_layer_idx: int = 3
    kind = "split"


#: a card of any re-ranker kind.
TOKEN_CARD_TYPES: dict[str, type[TokenInteractionCard]] = {"late-interaction": ColBERTCard, "split": PreTTRCard}


def _token_from_mapping(data: dict[str, Any], **extra: Any) -> TokenInteractionCard:
    cls = TOKEN_CARD_TYPES[data["kind"]]
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in {**data, **extra}.items() if k in known}
    kwargs["aliases"] = tuple(kwargs.get("aliases", ()))
    return cls(**kwargs)


@cache
def list_token_cards() -> dict[str, TokenInteractionCard]:
    out: dict[str, TokenInteractionCard] = {}
    for entry in resources.files("kd_pyserini._cards").iterdir():
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            if data.get("kind") in TOKEN_CARD_TYPES:
                card = _token_from_mapping(data)
                out[card.name] = card
    return out


def token_lookup(name: str) -> TokenInteractionCard | None:
    key = name.strip().lower()
    for card in list_token_cards().values():
        if key == card.name.lower() or key in (a.lower() for a in card.aliases) or key == card.model_id.lower():
            return card
    return None


def token_card_for_directory(path: Path, kind: str) -> TokenInteractionCard:
    own = path / CARD_FILENAME
    if own.is_file():
        data = tomllib.loads(own.read_text(encoding="utf-8"))
        data.setdefault("name", path.name)
        return _token_from_mapping(data, model_id=str(path))
    cfg = read_json(path / "config.json")
    if kind == "late-interaction":
        base = str(cfg.get("bert_model") or "")
        return ColBERTCard(name=path.name, model_id=str(path), tokenizer=base or None,
                           compression_dim=cfg.get("compression_dim"),
                           note=f"no kd_pyserini card in {path}: ColBERT checkpoint, query/passage cut at 30/200 "
                                "tokens, 8 [MASK] tokens appended to each query; add a kd_pyserini_card.toml (kind = "
                                "\"late-interaction\") to change that")
    join = int(cfg.get("join_layer_idx") or 3)
    return PreTTRCard(name=path.name, model_id=str(path), join_layer_idx=join,
                      note=f"no kd_pyserini card in {path}: PreTTR checkpoint split at layer {join}, query/passage cut "
                           "at 30/200 tokens, 8 [MASK] tokens appended to each query; add a kd_pyserini_card.toml "
                           "(kind = \"split\") to change that")


def token_directory_kind(path: Path) -> str | None:
    """``late-interaction`` or ``split`` when a folder's own card says so or its ``config.json`` is that hub layout:
    ``model_type: "ColBERT"`` (ColBERT) or ``architectures: ["PreTTR"]`` / a ``join_layer_idx`` field (PreTTR)."""
    own = path / CARD_FILENAME
    if own.is_file():
        kind = tomllib.loads(own.read_text(encoding="utf-8")).get("kind")
        return kind if kind in TOKEN_CARD_TYPES else None
    cfg = read_json(path / "config.json")
    if str(cfg.get("model_type", "")).lower() == "colbert":
        return "late-interaction"
    if "PreTTR" in (cfg.get("architectures") or ()) or "join_layer_idx" in cfg:
        return "split"
    return None
