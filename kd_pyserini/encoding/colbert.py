"""ColBERT (late interaction) re-ranker, as Hofstätter et al. 2020 (arXiv 2010.02666) distil it with Margin-MSE.

ColBERT: Omar Khattab and Matei Zaharia. "ColBERT: Efficient and Effective Passage Search via Contextualized Late
Interaction over BERT". SIGIR 2020 (arXiv 2004.12832). The checkpoint layout is the one of the authors' notebook
``minimal_colbert_usage_example.ipynb`` (github.com/sebastian-hofstaetter/neural-ranking-kd) and the hub model
``sebastian-hofstaetter/colbert-distilbert-margin_mse-T2-msmarco``:

* ``config.json``: ``model_type: "ColBERT"``, ``bert_model`` (the base, ``distilbert-base-uncased``),
  ``compression_dim`` (768: no compression);
* weights: ``bert_model.*`` (a DistilBERT) and ``compressor.weight/bias`` (``Linear(hidden, compression_dim)``).

Token vectors = ``compressor(last hidden state)`` for query and passage alike (the notebook's
``forward_representation``); the query is ``[CLS] q [SEP]`` plus 8 ``[MASK]`` tokens (id 103) with attention 1. The
score (``forward_aggregation``) is, per query token, the largest dot product with any non-padding passage token
(padding masked with -10000), padding query tokens zeroed, summed over the query. The passage side is the passage's
token vectors (``[CLS]`` and ``[SEP]`` included), which :mod:`kd_pyserini.index.passage_store` can keep.

Students: :func:`new_colbert_student` (a base transformer and a fresh compressor), :func:`colbert_pair_scores` (the
differentiable score of aligned rows, for Margin-MSE), :func:`append_query_masks` and :func:`save_colbert` (the hub
layout, which :class:`ColBERTReranker` loads back).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kd_pyserini.encoding.checkpoints import _IGNORABLE, _base_config, _load_tokenizer, _read_state_dict
from kd_pyserini.encoding.interaction import TokenInteractionReranker
from kd_pyserini.encoding.loading import ModelLoadError

__all__ = ["ColBERTModel", "ColBERTReranker", "load_colbert", "maxsim", "append_query_masks",
           "colbert_pair_scores", "new_colbert_student", "save_colbert"]


class ColBERTModel(torch.nn.Module):
    """The checkpoint's modules under their checkpoint names: ``bert_model`` and ``compressor``."""

    def __init__(self, bert_model: torch.nn.Module, compression_dim: int):
        super().__init__()
        self.bert_model = bert_model
        hidden = int(getattr(bert_model.config, "hidden_size", None) or bert_model.config.dim)
        self.compressor = torch.nn.Linear(hidden, compression_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token vectors ``(B, L, compression_dim)`` (the notebook's ``forward_representation``)."""
        hidden = self.bert_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.compressor(hidden)


def maxsim(q: torch.Tensor, q_mask: torch.Tensor, p: torch.Tensor, p_mask: torch.Tensor) -> torch.Tensor:
    """ColBERT's score of padded batches: ``(B, Lq, d)``, ``(B, Lq)``, ``(B, Lp, d)``, ``(B, Lp)`` -> ``(B,)``.

    Exactly the notebook's ``forward_aggregation``: dot products, passage padding set to -10000 before the max over
    passage tokens, padding query tokens zeroed, summed over the query.
    """
    score = torch.bmm(q, p.transpose(2, 1))
    score = score.masked_fill(~p_mask.bool().unsqueeze(1).expand(-1, score.shape[1], -1), -10000)
    score = score.max(-1).values
    score = score.masked_fill(~q_mask.bool(), 0)
    return score.sum(-1)


def load_colbert(folder: Path, card: Any) -> tuple[Any, ColBERTModel]:
    """``(tokenizer, model)`` from a folder in the hub layout (see the module docstring).

    Raises:
        ModelLoadError: not that layout, or weights that do not fit (one line naming the folder).
    """
    from transformers import AutoModel

    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if str(cfg.get("model_type", "")).lower() != "colbert":
        raise ModelLoadError(f"{folder / 'config.json'} has model_type {cfg.get('model_type')!r}, not 'ColBERT'")
    sd = _read_state_dict(folder)
    base_sd = {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith("bert_model.")}
    comp = {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith("compressor.")}
    if not base_sd or set(comp) != {"weight", "bias"}:
        raise ModelLoadError(f"{folder}: not the ColBERT layout (expected weights 'bert_model.*' and "
                             "'compressor.weight/bias')")
    bert_model = str(cfg.get("bert_model") or card.tokenizer or "")
    base = AutoModel.from_config(_base_config(bert_model, base_sd, folder))
    missing, unexpected = base.load_state_dict(base_sd, strict=False)
    missing = [k for k in missing if not k.endswith(_IGNORABLE)]
    unexpected = [k for k in unexpected if not k.endswith(_IGNORABLE)]
    if missing or unexpected:
        raise ModelLoadError(f"{folder}: the weights do not fit the base model ({len(missing)} missing, e.g. "
                             f"{(missing or ['-'])[0]}; {len(unexpected)} unexpected, e.g. {(unexpected or ['-'])[0]})")
    dim = int(comp["weight"].shape[0])
    want = cfg.get("compression_dim") or card.compression_dim
    if want is not None and int(want) != dim:
        raise ModelLoadError(f"{folder}: compression_dim {want} but the compressor outputs {dim} dimensions")
    model = ColBERTModel(base, dim)
    if comp["weight"].shape[1] != model.compressor.in_features:
        raise ModelLoadError(f"{folder}: compressor.weight has shape {tuple(comp['weight'].shape)}; expected "
                             f"({dim}, {model.compressor.in_features})")
    model.compressor.load_state_dict({k: v.float() for k, v in comp.items()})
    return _load_tokenizer(folder, [card.tokenizer or "", bert_model], auto=False), model.eval()


class ColBERTReranker(TokenInteractionReranker):
    """A ColBERT re-ranker (card kind ``late-interaction``); options as for
    :class:`~kd_pyserini.encoding.interaction.TokenInteractionReranker`."""

    kind = "late-interaction"

    def _load(self, folder: Path) -> tuple[Any, torch.nn.Module]:
        return load_colbert(folder, self.card)

    def _input_embeddings(self, model: torch.nn.Module) -> torch.nn.Embedding:
        return model.bert_model.get_input_embeddings()

    @property
    def dimension(self) -> int:
        return int(self.model.compressor.out_features)

    def _encode_queries(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(ids, mask)

    def _encode_passages(self, ids: torch.Tensor, mask: torch.Tensor, offset: int) -> torch.Tensor:
        return self.model(ids, mask)

    def _interact(self, q: Sequence[torch.Tensor], p: Sequence[torch.Tensor]) -> torch.Tensor:
        from torch.nn.utils.rnn import pad_sequence

        qp, pp = pad_sequence(list(q), batch_first=True), pad_sequence(list(p), batch_first=True)
        qm = pad_sequence([torch.ones(len(x), dtype=torch.bool, device=x.device) for x in q], batch_first=True)
        pm = pad_sequence([torch.ones(len(x), dtype=torch.bool, device=x.device) for x in p], batch_first=True)
        with torch.autocast(self.device.type, enabled=False):  # the interaction in fp32, whatever the encoder ran in
            return maxsim(qp.float(), qm, pp.float(), pm)

    def store_key(self) -> dict[str, Any]:
        return {**super().store_key(), "dimension": self.dimension}


# ------------------------------------------------------------------------------------------------------------------
# Students (Margin-MSE training): differentiable pieces and the hub layout on disk
# ------------------------------------------------------------------------------------------------------------------

def append_query_masks(ids: torch.Tensor, mask: torch.Tensor, mask_id: int, n: int = 8
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded query batches ``(B, L)`` -> ``(B, L + n)`` with ``n`` ``[MASK]`` ids (attention 1) right after each
    row's last real token, as the notebooks append them to an unpadded query; padding stays at the end."""
    lengths = mask.sum(1)
    b, width = ids.shape
    out_ids = ids.new_zeros((b, width + n))
    out_mask = mask.new_zeros((b, width + n))
    for r in range(b):
        k = int(lengths[r])
        out_ids[r, :k] = ids[r, :k]
        out_ids[r, k:k + n] = mask_id
        out_mask[r, :k + n] = 1
    return out_ids, out_mask


def colbert_pair_scores(model: ColBERTModel, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: torch.Tensor,
                        p_mask: torch.Tensor) -> torch.Tensor:
    """Scores ``(B,)`` of aligned rows (query ``b`` with passage ``b``), differentiable: the notebook's ``forward``.
    Queries must already carry their ``[MASK]`` tokens (:func:`append_query_masks`)."""
    return maxsim(model(q_ids, q_mask), q_mask, model(p_ids, p_mask), p_mask)


def new_colbert_student(base: str | Path, compression_dim: int = 768) -> ColBERTModel:
    """A ColBERT to train: the transformer of ``base`` (a local DistilBERT/BERT folder or cached hub id) and a fresh
    ``compressor`` (``Linear(hidden, compression_dim)``), as Hofstätter et al. 2020 start their students."""
    from transformers import AutoModel

    return ColBERTModel(AutoModel.from_pretrained(str(base)), compression_dim)


def save_colbert(model: ColBERTModel, tokenizer: Any, folder: str | Path, bert_model: str) -> Path:
    """Write ``model`` in the hub layout :func:`load_colbert` reads (config ``model_type: "ColBERT"``, ``bert_model``,
    ``compression_dim``; ``model.safetensors`` with ``bert_model.*`` and ``compressor.*``; the tokenizer), each file
    under a temporary name, then renamed."""
    from safetensors.torch import save_file

    from kd_pyserini.atomic import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if not all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()):
        raise ValueError(f"refusing to save non-finite ColBERT weights into {folder}")
    tmp = folder / ".model.safetensors.tmp"
    save_file(sd, str(tmp))
    tmp.replace(folder / "model.safetensors")
    cfg = {"architectures": ["ColBERT"], "model_type": "ColBERT", "bert_model": str(bert_model),
           "compression_dim": int(model.compressor.out_features), "dropout": 0.0, "return_vecs": False,
           "trainable": True}
    with atomic_write(folder / "config.json") as f:
        json.dump(cfg, f, indent=2)
    tokenizer.save_pretrained(str(folder))
    return folder
