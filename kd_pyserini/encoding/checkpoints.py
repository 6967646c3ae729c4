"""Reading re-ranker checkpoints in their hub layouts: the folder (local, cached or downloaded), the weights, the base
model's configuration and the tokenizer, with one-line errors that say the fix.

Shared by every re-ranker kind (:mod:`~kd_pyserini.encoding.cross_encoder`, :mod:`~kd_pyserini.encoding.colbert`,
:mod:`~kd_pyserini.encoding.prettr`): Hofstätter et al. 2020 (arXiv 2010.02666) publish BERT_CAT, ColBERT and PreTTR
checkpoints as custom classes around a DistilBERT (``bert_model.*`` or a ``DistilBertModel`` subclass), whose base
configuration is not always in the folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kd_pyserini.encoding.loading import ModelLoadError, hub_cached, hub_reachable

__all__ = ["CROSS_PRECISIONS"]

log = logging.getLogger(__name__)

#: precisions a re-ranker runs at (int8 is for bi-encoder queries only).
CROSS_PRECISIONS = ("fp32", "fp16", "bf16")
#: files fetched from the hub for a checkpoint (the folder's top level only: no ONNX/OpenVINO copies).
_HUB_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
              "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "sentence_bert_config.json",
              "model.safetensors", "model.safetensors.index.json", "model-*.safetensors", "pytorch_model.bin",
              "pytorch_model.bin.index.json", "pytorch_model-*.bin"]
#: buffers some checkpoints carry and newer transformers do not keep (or the reverse): never weights.
_IGNORABLE = ("position_ids", "token_type_ids")

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
    raise ModelLoadError(f"{folder}: the base model {bert_model!r} is neither a local folder nor in the Hugging "
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
