"""Encoder cards: what an encoder *is* (model id, pooling, similarity, lengths, dimension, published scores).

Cards are small TOML files in the top-level ``encoders/`` folder, shipped in the wheel as ``kd_pyserini._cards``.
:func:`get_card` accepts a card name or alias (``distilbert-dot``, ``distilbert-dot-tas-b``, ...), a hub id
(``sebastian-hofstaetter/distilbert-dot-tas_b-b256-msmarco``) or a local model directory. A directory may carry its
own card as ``kd_pyserini_card.toml`` (``kd-train`` writes one); a directory without one gets CLS pooling and dot
product, and :attr:`EncoderCard.note` says so.

Re-rankers have their own card types, one per kind (:data:`RERANKER_CARD_KINDS`, the one place that lists the kinds;
:data:`kd_pyserini.encoding.rerankers.RERANKER_KINDS` maps each to its constructor), after the model family of
Hofstätter et al. 2020 (arXiv 2010.02666):

* ``cross-encoder`` (BERT_CAT): :class:`CrossEncoderCard`, resolved by :func:`get_cross_encoder_card`;
* ``late-interaction`` (ColBERT, Khattab & Zaharia 2020): :class:`ColBERTCard`;
* ``split`` (PreTTR, MacAvaney et al. 2020): :class:`PreTTRCard`.

:func:`get_reranker_card` resolves any re-ranker kind (card name, hub id, or a folder recognised by its own card or its
``config.json``); :func:`get_card` and :func:`list_cards` stay bi-encoder only. :func:`resolve_any_card` takes every
kind (a teacher may be any of them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from kd_pyserini.card_kinds import (CARD_FILENAME, CARD_KINDS, RERANKER_CARD_KINDS, TOKEN_CARD_TYPES, ColBERTCard,
                                    PreTTRCard, TokenInteractionCard, list_token_cards, model_location, read_json,
                                    token_card_for_directory, token_directory_kind, token_lookup)
from kd_pyserini.errors import KdError

__all__ = ["EncoderCard", "UnknownEncoderError", "get_card", "list_cards", "CARD_FILENAME", "write_card",
           "CARD_KINDS", "CROSS_ENCODER_FAMILIES", "CrossEncoderCard", "UnknownRerankerError",
           "get_cross_encoder_card", "list_cross_encoder_cards", "resolve_any_card", "RERANKER_CARD_KINDS",
           "ColBERTCard", "PreTTRCard", "RerankerCard", "get_reranker_card", "list_reranker_cards"]

log = logging.getLogger(__name__)
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

    @property
    def kind(self) -> str:
        """``bi-encoder`` (queries and passages encoded apart; :class:`CrossEncoderCard` says ``cross-encoder``)."""
        return "bi-encoder"

    def model_location(self) -> str:
        """Where to load the weights from: an installed package's folder if any, else ``model_id``."""
        return model_location(self)

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
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            if data.get("kind", "bi-encoder") != "bi-encoder":  # re-rankers: list_cross_encoder_cards()
                continue
            card = _from_mapping(data)
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
        if _never_a_bi_encoder(path):
            raise UnknownEncoderError(f"{path} holds a re-ranker ({_reranker_directory_kind(path)}), not a "
                                      "bi-encoder: use it with 'kd-search --reranker' or 'kd-teacher score --teacher'")
        card = _card_for_directory(path)
        if card.note:
            log.warning(card.note)
        return card
    if _looks_like_path(name):
        raise FileNotFoundError(f"model directory {name} does not exist; fix the path, or use one of the encoder "
                                f"names: {', '.join(_known_names())}")
    cross = _reranker_lookup(name)
    if cross is not None:
        raise UnknownEncoderError(f"{name!r} is a {cross.kind} (re-ranker) card, not a bi-encoder: use it with "
                                  "'kd-search --reranker' or 'kd-teacher score --teacher'")
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


# ------------------------------------------------------------------------------------------------------------------
# Re-rankers (cross-encoders)
# ------------------------------------------------------------------------------------------------------------------

#: ``sequence-classification``: a Hugging Face ``*ForSequenceClassification`` checkpoint with one label (e.g.
#: ``cross-encoder/ms-marco-MiniLM-L6-v2``); ``bert-cat``: Hofstätter's matchmaker ``BERT_Cat`` layout (config
#: ``model_type: "BERT_Cat"`` and ``bert_model``; weights ``bert_model.*`` and ``_classification_layer.*``).
CROSS_ENCODER_FAMILIES = ("sequence-classification", "bert-cat")


class UnknownRerankerError(KdError, ValueError):
    """The re-ranker name is neither a cross-encoder card, a hub id, nor a cross-encoder model directory."""


@dataclass(frozen=True)
class CrossEncoderCard:
    """A re-ranker: query and passage read together as ``[CLS] query [SEP] passage [SEP]``, score = one logit.

    Attributes:
        name: the card's name (``distilbert-cat-margin-mse``).
        model_id: hub id or local directory of the weights.
        family: one of :data:`CROSS_ENCODER_FAMILIES`.
        max_length: tokens of the whole pair, special tokens included; longer pairs are cut the way the Hugging Face
            tokenizer cuts a pair with ``truncation=True`` (``longest_first``: tokens come off the longer text).
        tokenizer: where the tokenizer comes from when the weights folder has none (BERT_Cat: its base model).
        architecture, aliases, local_package, published, note: as for :class:`EncoderCard`.
    """

    name: str
    model_id: str
    family: str = "sequence-classification"
    max_length: int = 512
    tokenizer: str | None = None
    architecture: str | None = None
    aliases: tuple[str, ...] = ()
    local_package: str | None = None
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None

    def __post_init__(self) -> None:
        if self.family not in CROSS_ENCODER_FAMILIES:
            raise ValueError(f"card {self.name}: family {self.family!r} is not one of {CROSS_ENCODER_FAMILIES}")
        if self.max_length < 4:
            raise ValueError(f"card {self.name}: max_length {self.max_length} is too small for a query-passage pair")

    @property
    def kind(self) -> str:
        return "cross-encoder"

    model_location = EncoderCard.model_location

    def describe(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aliases"] = list(self.aliases)
        d["kind"] = self.kind
        return d

    def replace(self, **changes: Any) -> "CrossEncoderCard":
        return dataclasses.replace(self, **changes)


def _cross_from_mapping(data: dict[str, Any], **extra: Any) -> CrossEncoderCard:
    known = {f.name for f in dataclasses.fields(CrossEncoderCard)}
    kwargs = {k: v for k, v in data.items() if k in known}
    kwargs["aliases"] = tuple(kwargs.get("aliases", ()))
    kwargs.update(extra)
    return CrossEncoderCard(**kwargs)


@cache
def list_cross_encoder_cards() -> dict[str, CrossEncoderCard]:
    """All shipped re-ranker cards by name."""
    out: dict[str, CrossEncoderCard] = {}
    for entry in resources.files("kd_pyserini._cards").iterdir():
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            if data.get("kind") == "cross-encoder":
                card = _cross_from_mapping(data)
                out[card.name] = card
    return out


def _cross_lookup(name: str) -> CrossEncoderCard | None:
    key = name.strip().lower()
    for card in list_cross_encoder_cards().values():
        if key == card.name.lower() or key in (a.lower() for a in card.aliases) or key == card.model_id.lower():
            return card
    return None


def _cross_encoder_directory(path: Path) -> str | None:
    """The cross-encoder family of a model folder (its own card, a BERT_Cat or a one-label sequence-classification
    config), or ``None`` when the folder does not look like a re-ranker."""
    own = path / CARD_FILENAME
    if own.is_file():
        data = tomllib.loads(own.read_text(encoding="utf-8"))
        if data.get("kind") == "cross-encoder":
            return data.get("family", "sequence-classification")
        return None
    cfg = read_json(path / "config.json")
    if str(cfg.get("model_type", "")).lower() == "bert_cat":
        return "bert-cat"
    if any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or ()):
        return "sequence-classification"
    return None


def _never_a_bi_encoder(path: Path) -> bool:
    """A folder that cannot be read as a bi-encoder: a BERT_Cat, ColBERT or PreTTR checkpoint, or a card saying a
    re-ranker kind."""
    own = path / CARD_FILENAME
    if own.is_file():
        return tomllib.loads(own.read_text(encoding="utf-8")).get("kind") in RERANKER_CARD_KINDS
    return str(read_json(path / "config.json").get("model_type", "")).lower() == "bert_cat" or \
        _reranker_directory_kind(path) in ("late-interaction", "split")


def _cross_card_for_directory(path: Path, family: str) -> CrossEncoderCard:
    own = path / CARD_FILENAME
    if own.is_file():
        data = tomllib.loads(own.read_text(encoding="utf-8"))
        data.setdefault("name", path.name)
        return _cross_from_mapping(data, model_id=str(path))
    cfg = read_json(path / "config.json")
    limit = int(cfg.get("max_position_embeddings") or 512)
    if family == "bert-cat":
        base = str(cfg.get("bert_model") or "")
        return CrossEncoderCard(name=path.name, model_id=str(path), family=family, max_length=min(512, limit),
                                tokenizer=base or None, architecture=base.rsplit("/", 1)[-1].split("-")[0] or None,
                                note=f"no kd_pyserini card in {path}: BERT_Cat checkpoint, pairs cut at "
                                     f"{min(512, limit)} tokens; add a kd_pyserini_card.toml (kind = "
                                     "\"cross-encoder\", max_length = ...) to change that")
    st = read_json(path / "sentence_bert_config.json")
    max_length = int(st.get("max_seq_length") or min(512, limit))
    return CrossEncoderCard(name=path.name, model_id=str(path), family=family, max_length=max_length,
                            architecture=cfg.get("model_type"),
                            note=f"no kd_pyserini card in {path}: sequence-classification cross-encoder, pairs cut at "
                                 f"{max_length} tokens")


def _known_cross_names() -> list[str]:
    return sorted(c.name + (f" ({', '.join(c.aliases)})" if c.aliases else "")
                  for c in list_cross_encoder_cards().values())


def get_cross_encoder_card(name_or_path: str | CrossEncoderCard) -> CrossEncoderCard:
    """Resolve a re-ranker name, hub id or local directory to its card.

    Unknown hub ids are taken as one-label sequence-classification checkpoints (``note`` says so; loading checks that
    the checkpoint really has a trained one-logit head).

    Raises:
        UnknownRerankerError: a bi-encoder card or folder, or a name that is none of the above.
        FileNotFoundError: it looks like a path but does not exist.
    """
    if isinstance(name_or_path, CrossEncoderCard):
        return name_or_path
    if isinstance(name_or_path, EncoderCard):
        raise UnknownRerankerError(f"{name_or_path.name} is a bi-encoder card, not a re-ranker")
    name = str(name_or_path)
    card = _cross_lookup(name)
    if card is not None:
        return card
    path = Path(name).expanduser()
    if token_lookup(name) is not None or (path.is_dir() and
                                           _reranker_directory_kind(path) in ("late-interaction", "split")):
        kind = token_lookup(name).kind if token_lookup(name) else _reranker_directory_kind(path)
        raise UnknownRerankerError(f"{name!r} is a {kind} re-ranker, not a cross-encoder: build it with "
                                   "kd_pyserini.encoding.rerankers.load_reranker (cards: get_reranker_card)")
    if path.is_dir():
        family = _cross_encoder_directory(path)
        if family is None:
            raise UnknownRerankerError(f"{path} is not a cross-encoder folder (no kd_pyserini card with kind = "
                                       "\"cross-encoder\", no BERT_Cat config, no *ForSequenceClassification "
                                       "architecture); a bi-encoder re-ranks with 'kd-search --mode rerank --encoder'")
        card = _cross_card_for_directory(path, family)
        if card.note:
            log.warning(card.note)
        return card
    if _looks_like_path(name):
        raise FileNotFoundError(f"model directory {name} does not exist; fix the path, or use one of the re-ranker "
                                f"names: {', '.join(_known_cross_names())}")
    if _lookup(name) is not None:
        raise UnknownRerankerError(f"{name!r} is a bi-encoder card, not a re-ranker: re-rank with it through "
                                   f"'--encoder {name}'; re-rankers: {', '.join(_known_cross_names())}")
    if name.count("/") == 1 and " " not in name:
        return CrossEncoderCard(name=name, model_id=name,
                                note=f"{name} has no kd_pyserini card: assuming a one-label sequence-classification "
                                     "cross-encoder, pairs cut at 512 tokens")
    raise UnknownRerankerError(f"unknown re-ranker {name!r}; known re-rankers: {', '.join(_known_cross_names())} "
                               "(or give a Hugging Face hub id 'owner/model' or a local model directory)")


def resolve_any_card(name_or_path: str | EncoderCard | CrossEncoderCard | TokenInteractionCard) -> Any:
    """A card of any kind: re-ranker cards and folders first, then bi-encoder cards and folders; an unknown hub
    id is taken as a cross-encoder (what a distillation teacher usually is).

    Raises:
        UnknownEncoderError: neither kind knows the name (the message lists both kinds' names).
    """
    if isinstance(name_or_path, (EncoderCard, CrossEncoderCard, TokenInteractionCard)):
        return name_or_path
    name = str(name_or_path)
    card: Any = _reranker_lookup(name) or _lookup(name)
    if card is not None:
        return card
    path = Path(name).expanduser()
    if path.is_dir():
        return get_reranker_card(name) if _reranker_directory_kind(path) else get_card(name)
    if _looks_like_path(name):
        raise FileNotFoundError(f"model directory {name} does not exist; fix the path, or use a card name: "
                                f"{', '.join(_known_names() + _known_reranker_names())}")
    if name.count("/") == 1 and " " not in name:
        return get_cross_encoder_card(name)
    raise UnknownEncoderError(f"unknown model {name!r}; re-rankers: {', '.join(_known_reranker_names())}; bi-encoders: "
                              f"{', '.join(_known_names())} (or a hub id 'owner/model' or a local model directory)")


#: a card of any re-ranker kind.
RerankerCard = CrossEncoderCard | ColBERTCard | PreTTRCard


def list_reranker_cards() -> dict[str, Any]:
    """All shipped re-ranker cards of every kind, by name."""
    return {**list_cross_encoder_cards(), **list_token_cards()}


def _reranker_lookup(name: str) -> Any:
    return _cross_lookup(name) or token_lookup(name)


def _known_reranker_names() -> list[str]:
    return sorted(c.name + (f" ({', '.join(c.aliases)})" if c.aliases else "")
                  for c in list_reranker_cards().values())


def _reranker_directory_kind(path: Path) -> str | None:
    """The re-ranker kind of a model folder (:func:`~kd_pyserini.card_kinds.token_directory_kind`, else a
    cross-encoder config or card), ``None`` for anything else."""
    return token_directory_kind(path) or ("cross-encoder" if _cross_encoder_directory(path) else None)


def get_reranker_card(name_or_path: str | Any) -> Any:
    """Resolve a re-ranker of any kind (:data:`RERANKER_CARD_KINDS`): card name or alias, hub id or local folder.

    A folder saved in a hub layout is recognised by its ``config.json`` (:func:`_reranker_directory_kind`); an
    unknown hub id is taken as a cross-encoder (:func:`get_cross_encoder_card`).

    Raises:
        UnknownRerankerError: a bi-encoder, or a name that is none of the above. FileNotFoundError: a missing path.
    """
    if isinstance(name_or_path, (CrossEncoderCard, TokenInteractionCard)):
        return name_or_path
    if isinstance(name_or_path, EncoderCard):
        raise UnknownRerankerError(f"{name_or_path.name} is a bi-encoder card, not a re-ranker")
    name = str(name_or_path)
    card = _reranker_lookup(name)
    if card is not None:
        return card
    path = Path(name).expanduser()
    if path.is_dir():
        kind = _reranker_directory_kind(path)
        if kind in TOKEN_CARD_TYPES:
            card = token_card_for_directory(path, kind)
            if card.note:
                log.warning(card.note)
            return card
    return get_cross_encoder_card(name)
