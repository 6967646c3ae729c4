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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from kd_pyserini.cards import CrossEncoderCard, get_cross_encoder_card
from kd_pyserini.encoding.device import resolve_device
from kd_pyserini.encoding.fast_linear import use_fast_linear
from kd_pyserini.encoding.loading import ModelLoadError, hub_cached, hub_reachable
from kd_pyserini.progress import progress_bar

__all__ = ["CROSS_PRECISIONS", "BertCat", "CrossEncoder", "load_cross_encoder", "ScoredHit", "hit_text",
           "rerank_hits"]

log = logging.getLogger(__name__)

CROSS_PRECISIONS = ("fp32", "fp16", "bf16")
#: files fetched from the hub for a checkpoint (the folder's top level only: no ONNX/OpenVINO copies).
_HUB_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
              "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "sentence_bert_config.json",
              "model.safetensors", "model.safetensors.index.json", "model-*.safetensors", "pytorch_model.bin",
              "pytorch_model.bin.index.json", "pytorch_model-*.bin"]
#: buffers some checkpoints carry and newer transformers do not keep (or the reverse): never weights.
_IGNORABLE = ("position_ids", "token_type_ids")


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

def _offline_fix(location: str) -> str:
    return (f"on a machine with internet run 'hf download {location} --local-dir DIR' and pass DIR as the "
            "re-ranker/teacher")


def _model_folder(location: str) -> Path:
    """A local folder holding the checkpoint: ``location`` itself, or its hub snapshot (cached or downloaded)."""
    path = Path(location).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{location} has no config.json, so it is not a Hugging Face model directory; "
                                 "point at the folder that holds config.json and the weights")
        return path
    cached, online = hub_cached(location), hub_reachable()
    if not cached and not online:
        raise ModelLoadError(f"{location!r} is not in the local Hugging Face cache and the hub cannot be reached "
                             f"(offline?). Fix: {_offline_fix(location)}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, allow_patterns=_HUB_FILES, local_files_only=not online))
    except Exception as e:  # noqa: BLE001  (any hub failure: one line with the fix)
        raise ModelLoadError(f"could not fetch {location!r} from the Hugging Face hub ({type(e).__name__}: no "
                             f"network, or no such model). Fix: {_offline_fix(location)}") from e


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    st = sorted(folder.glob("model*.safetensors"))
    if st:
        from safetensors.torch import load_file

        out: dict[str, torch.Tensor] = {}
        for f in st:
            out.update(load_file(str(f)))
        return out
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not bins:
        raise ModelLoadError(f"{folder} has no weights (model.safetensors or pytorch_model.bin)")
    out = {}
    for f in bins:
        out.update(torch.load(f, map_location="cpu", weights_only=True))
    return out


def _infer_base_config(sd: Mapping[str, torch.Tensor]) -> Any | None:
    """A DistilBERT or BERT configuration read off the weights' shapes (64-dim attention heads), or ``None``."""
    from transformers import BertConfig, DistilBertConfig

    emb = sd.get("embeddings.word_embeddings.weight")
    pos = sd.get("embeddings.position_embeddings.weight")
    if emb is None or pos is None or emb.shape[1] % 64:
        return None
    vocab, dim = emb.shape
    if "transformer.layer.0.attention.q_lin.weight" in sd:
        layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.layer."))
        return DistilBertConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=dim // 64,
                                hidden_dim=sd["transformer.layer.0.ffn.lin1.weight"].shape[0],
                                max_position_embeddings=pos.shape[0])
    if "encoder.layer.0.attention.self.query.weight" in sd:
        layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer."))
        types = sd.get("embeddings.token_type_embeddings.weight")
        return BertConfig(vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=dim // 64,
                          intermediate_size=sd["encoder.layer.0.intermediate.dense.weight"].shape[0],
                          max_position_embeddings=pos.shape[0], type_vocab_size=2 if types is None else types.shape[0])
    return None


def _base_config(bert_model: str, sd: Mapping[str, torch.Tensor], folder: Path) -> Any:
    """The BERT_Cat base's configuration: ``bert_model``'s own (local folder, cache, hub), else read off the weights."""
    from transformers import AutoConfig

    if bert_model:
        local = Path(bert_model).expanduser()
        if local.is_dir() and (local / "config.json").is_file():
            return AutoConfig.from_pretrained(str(local))
        if hub_cached(bert_model):
            return AutoConfig.from_pretrained(bert_model, local_files_only=True)
    inferred = _infer_base_config(sd)
    if inferred is not None:
        log.info("%s: base model %r not available here; its configuration was read off the weights (%s, %d layers, "
                 "hidden size %d)", folder, bert_model, inferred.model_type,
                 getattr(inferred, "n_layers", getattr(inferred, "num_hidden_layers", 0)),
                 getattr(inferred, "dim", getattr(inferred, "hidden_size", 0)))
        return inferred
    if bert_model and not Path(bert_model).expanduser().exists() and hub_reachable():
        return AutoConfig.from_pretrained(bert_model)
    raise ModelLoadError(f"{folder}: the BERT_Cat base {bert_model!r} is neither a local folder nor in the Hugging "
                         "Face cache, and its configuration cannot be read off the weights; fix: download it ('hf "
                         f"download {bert_model} --local-dir DIR') and set \"bert_model\": \"DIR\" in "
                         f"{folder / 'config.json'}")


def _load_tokenizer(folder: Path, fallbacks: Sequence[str], auto: bool = True) -> Any:
    """The folder's tokenizer (``auto``: through ``AutoTokenizer``; a BERT_Cat folder only when its tokenizer config
    names its class, since ``AutoTokenizer`` does not know ``model_type: BERT_Cat``); else a BERT WordPiece tokenizer
    from its ``vocab.txt``; else the first fallback (the card's ``tokenizer``, the BERT_Cat base) that is a local
    folder or cached."""
    from transformers import AutoTokenizer, BertTokenizerFast

    cfg: dict[str, Any] = {}
    if (folder / "tokenizer_config.json").is_file():
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    first_error: Exception | None = None
    if auto or cfg.get("tokenizer_class"):
        try:
            return AutoTokenizer.from_pretrained(str(folder))
        except Exception as e:  # noqa: BLE001  (fall back to the vocabulary file)
            first_error = e
    vocab = folder / "vocab.txt"
    if vocab.is_file():
        # transformers 5 ignores vocab_file= as a keyword: the vocabulary goes positionally.
        tok = BertTokenizerFast(str(vocab), do_lower_case=bool(cfg.get("do_lower_case", True)))
        lines = sum(1 for line in vocab.open(encoding="utf-8") if line.strip())
        if len(tok) < lines:
            raise ModelLoadError(f"{vocab}: the tokenizer holds {len(tok)} tokens but the file lists {lines}")
        return tok
    for name in fallbacks:
        if name and (Path(name).expanduser().is_dir() or hub_cached(name)):
            return AutoTokenizer.from_pretrained(name, local_files_only=not Path(name).expanduser().is_dir())
    why = f" ({type(first_error).__name__})" if first_error else ""
    raise ModelLoadError(f"{folder} has no tokenizer{why} and none of {[f for f in fallbacks if f]} is available "
                         "here; fix: put the base model's vocab.txt/tokenizer files into the folder")


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
        if self.device.type == "cuda" and precision in ("fp16", "bf16"):
            model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        elif self.device.type == "cpu":
            use_fast_linear(model, torch.bfloat16 if precision == "bf16" else torch.float32)
        self.model = model.to(self.device).eval()
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

    def _autocast(self) -> Any:
        if self.precision == "bf16" and self.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        dev = self.device
        ids, mask = ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True)
        tt = types.to(dev, non_blocking=True) if self.token_types else None
        with self._autocast():
            return self.model(ids, mask, tt).float()

    def _batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Indices of length-sorted batches (longest first): ``batch_size`` pairs each on CPU; on CUDA as many as
        fit in ``batch_size * max_length`` padded tokens."""
        order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
        if self.device.type != "cuda":
            return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        budget, out, start = self.batch_size * self.max_length, [], 0
        while start < len(order):
            size = max(1, min(budget // max(int(lengths[order[start]]), 1), len(order) - start))
            out.append(order[start:start + size])
            start += size
        return out

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], passages: Sequence[str],
                    pairs: Sequence[tuple[int, int]] | None = None, progress: bool | None = False,
                    on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores of pairs, in the order given.

        Args:
            queries / passages: texts. Without ``pairs`` they are zipped (``len(queries) == len(passages)``).
            pairs: ``(query index, passage index)`` per pair, to score many pairs over few distinct texts.
            progress: a bar of pairs scored on stderr. on_batch: called with the number of pairs after each batch.
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

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Scores of one query against several passages."""
        return self.score_pairs([query], passages, [(0, j) for j in range(len(passages))])

    def describe(self) -> dict[str, Any]:
        """What run sidecars and teacher manifests record."""
        return {**self.card.describe(), "max_length": self.max_length, "query_max_length": self.query_max_length,
                "passage_max_length": self.passage_max_length, "precision": self.precision,
                "device": str(self.device), "batch_size": self.batch_size}


# ------------------------------------------------------------------------------------------------------------------
# Pyserini hit lists
# ------------------------------------------------------------------------------------------------------------------

class ScoredHit(NamedTuple):
    """One re-ranked hit: its docid, the cross-encoder's score, and the hit object it came from."""

    docid: str
    score: float
    hit: Any


def hit_text(hit: Any) -> str:
    """A hit's passage text: ``.raw`` (a stored JSON document's ``contents``, or ``title`` + ``text``; else the raw
    string), else ``.contents``.

    Raises:
        ValueError: the hit carries no text (a dense hit): pass ``texts={docid: passage}``.
    """
    raw = getattr(hit, "raw", None)
    if raw:
        try:
            doc = json.loads(raw)
        except (TypeError, ValueError):
            return str(raw)
        if isinstance(doc, dict):
            if isinstance(doc.get("contents"), str):
                return doc["contents"]
            if isinstance(doc.get("text"), str):
                return " ".join(x for x in (doc.get("title") or "", doc["text"]) if x)
        return str(raw)
    contents = getattr(hit, "contents", None)
    if contents:
        return str(contents)
    raise ValueError(f"hit {getattr(hit, 'docid', '?')!r} carries no text (.raw or .contents); pass "
                     "texts={docid: passage} (e.g. from kd_pyserini.corpus.load_texts)")


def rerank_hits(query: str, hits: Sequence[Any], reranker: CrossEncoder | CrossEncoderCard | str,
                texts: Mapping[str, str] | None = None, depth: int | None = None) -> list[ScoredHit]:
    """Re-score a Pyserini hit list (anything with ``.docid``; text from ``texts`` or the hit's ``.raw`` /
    ``.contents``) with a cross-encoder; the first ``depth`` hits are re-scored and returned best first (ties by
    docid, descending, as trec_eval orders them).
    """
    encoder = reranker if isinstance(reranker, CrossEncoder) else CrossEncoder(reranker)
    kept = list(hits)[:depth] if depth else list(hits)
    passages = [texts[str(h.docid)] if texts is not None and str(h.docid) in texts else hit_text(h) for h in kept]
    scores = encoder.score(query, passages)
    out = [ScoredHit(str(h.docid), float(s), h) for h, s in zip(kept, scores.tolist())]
    return sorted(out, key=lambda x: (x.score, x.docid), reverse=True)
