"""Margin-MSE students that score a (query, passage) pair: BERT_CAT, ColBERT and PreTTR (``--architecture``).

Hofstätter et al. 2020 ("Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation",
arXiv:2010.02666) distil the same teacher margins into BERT_Dot (:class:`~kd_pyserini.train.model.BertDotStudent`),
BERT_CAT, ColBERT and PreTTR. The three here give one differentiable score per pair instead of two vectors, so only the
pairwise Margin-MSE term applies (no in-batch term: :func:`kd_pyserini.train.objective.batch_loss`). Each wraps the
building blocks of its re-ranker module:

* ``bert-cat``: :func:`~kd_pyserini.encoding.cross_encoder.new_bert_cat_student` (``[CLS] q [SEP] p [SEP]``, one
  logit on the CLS vector or pooler), saved in matchmaker's BERT_Cat layout;
* ``colbert``: :func:`~kd_pyserini.encoding.colbert.new_colbert_student` (queries with 8 ``[MASK]`` tokens, MaxSim
  over compressed token vectors), saved in the ColBERT hub layout;
* ``prettr``: :func:`~kd_pyserini.encoding.prettr.new_prettr_student` (lower layers apart, passage positions offset by
  the padded query width, upper layers joint), saved in the PreTTR hub layout. A BERT base (all-MiniLM-L6-v2) is first
  rewritten as the DistilBERT it is equivalent to (:func:`bert_as_distilbert`).

A checkpoint (:meth:`PairStudent.save`) is the hub layout of its kind plus a ``kd_pyserini_card.toml`` with the lengths
it was trained with, so ``load_reranker``, ``kd-teacher``, the in-batch teacher and ``kd-search --reranker`` load it
as they load the published checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd_pyserini.train.config import ARCHITECTURES

__all__ = ["PairStudent", "PAIR_ARCHITECTURES", "new_pair_student", "load_pair_student", "bert_as_distilbert",
           "QUERY_MASK_TOKENS", "PAIR_KINDS"]

#: the architectures this module trains (``bert-dot`` is :class:`~kd_pyserini.train.model.BertDotStudent`).
PAIR_ARCHITECTURES = tuple(a for a in ARCHITECTURES if a != "bert-dot")
#: the re-ranker card kind each is saved as.
PAIR_KINDS = {"bert-cat": "cross-encoder", "colbert": "late-interaction", "prettr": "split"}
#: ``[MASK]`` tokens appended to each ColBERT / PreTTR query (the notebooks' and the cards' 8).
QUERY_MASK_TOKENS = 8
#: PreTTR's split: the layer after which query and passage are read together (the published checkpoint's 3, at most
#: the base's layers - 1).
PRETTR_JOIN = 3


def _merge(ids: Any, mask: Any, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Length buckets (lists) -> one tensor padded to the widest bucket, rows in order."""
    if not isinstance(ids, (list, tuple)):
        return ids, mask
    width = max(int(x.shape[1]) for x in ids)
    return (torch.cat([nn.functional.pad(x, (0, width - int(x.shape[1])), value=pad_id) for x in ids]),
            torch.cat([nn.functional.pad(m, (0, width - int(m.shape[1])), value=0) for m in mask]))


class PairStudent(nn.Module):
    """A pair-scoring student. ``forward(q_ids, q_mask, p_ids, p_mask, q_rows, p_rows)`` -> float32 scores ``(N,)`` of
    the pairs ``(query row q_rows[k], passage row p_rows[k])``; every unique query and passage is encoded once
    (ColBERT, PreTTR's lower layers), so a DDP wrapper sees one forward per step.

    Args:
        architecture: ``bert-cat``, ``colbert`` or ``prettr``.
        model: the module its re-ranker module builds (BertCat, ColBERTModel, PreTTRModel).
        tokenizer: for the special token ids.
        base: what the student started from (recorded in the saved config as ``bert_model``).
    """

    def __init__(self, architecture: str, model: nn.Module, tokenizer: Any, base: str):
        super().__init__()
        if architecture not in PAIR_ARCHITECTURES:
            raise ValueError(f"architecture {architecture!r} is not one of {', '.join(PAIR_ARCHITECTURES)}")
        self.architecture, self.model, self.base = architecture, model, str(base)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.mask_id = tokenizer.mask_token_id
        if architecture != "bert-cat" and self.mask_id is None:
            raise ValueError(f"{base}: the tokenizer has no [MASK] token for the {architecture} query augmentation")
        self.layers_cut = False
        self._token_types = False
        if architecture == "bert-cat":
            import inspect

            self._token_types = "token_type_ids" in inspect.signature(model.bert_model.forward).parameters
        if architecture == "colbert" or (architecture == "bert-cat" and not model.use_pooler):
            for name, p in model.bert_model.named_parameters():  # a pooler no score uses: no gradient (DDP waits)
                if name.startswith("pooler."):
                    p.requires_grad_(False)

    @property
    def kind(self) -> str:
        return PAIR_KINDS[self.architecture]

    def transformer(self) -> nn.Module:
        """The Hugging Face transformer inside (gradient checkpointing, layer cuts)."""
        return self.model.bert_model if self.architecture in ("bert-cat", "colbert") else self.model

    def enable_gradient_checkpointing(self) -> None:
        inner = self.transformer()
        fn = getattr(inner, "gradient_checkpointing_enable", None)
        if fn is None:
            raise ValueError(f"--grad-checkpointing is not available for a {self.architecture} student")
        fn(gradient_checkpointing_kwargs={"use_reentrant": False})

    def compile(self, **kwargs: Any) -> None:  # type: ignore[override]
        raise ValueError(f"--compile is only for bert-dot students (not {self.architecture})")

    # -- scoring -------------------------------------------------------------------------------------------------

    def _queries(self, q_ids: torch.Tensor, q_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from kd_pyserini.encoding.colbert import append_query_masks

        return append_query_masks(q_ids, q_mask, int(self.mask_id), QUERY_MASK_TOKENS)

    def forward(self, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: Any, p_mask: Any, q_rows: torch.Tensor,
                p_rows: torch.Tensor) -> torch.Tensor:
        p_ids, p_mask = _merge(p_ids, p_mask, self.pad_id)
        if self.architecture == "colbert":
            from kd_pyserini.encoding.colbert import maxsim

            qi, qm = self._queries(q_ids, q_mask)
            q, p = self.model(qi, qm), self.model(p_ids, p_mask)
            return maxsim(q[q_rows], qm[q_rows], p[p_rows], p_mask[p_rows]).float()
        if self.architecture == "prettr":
            qi, qm = self._queries(q_ids, q_mask)
            pi, pm = p_ids[:, 1:], p_mask[:, 1:]  # PreTTR reads "p [SEP]": the passage's [CLS] is dropped
            q = self.model.lower(qi, qm, 0)
            p = self.model.lower(pi, pm, int(qi.shape[1]))
            joint = torch.cat([q[q_rows], p[p_rows]], 1)
            return self.model.upper(joint, torch.cat([qm[q_rows], pm[p_rows]], 1)).float()
        return self._bert_cat(q_ids, q_mask, p_ids, p_mask, q_rows, p_rows)

    def _bert_cat(self, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: torch.Tensor, p_mask: torch.Tensor,
                  q_rows: torch.Tensor, p_rows: torch.Tensor) -> torch.Tensor:
        """``[CLS] q [SEP] p [SEP]`` per pair (the passage's own ``[CLS]`` dropped; token types 0 then 1 where the
        base takes them), padded to the longest pair."""
        q_len, p_len = q_mask.sum(1).tolist(), p_mask.sum(1).tolist()
        rows = [(int(a), int(b)) for a, b in zip(q_rows.tolist(), p_rows.tolist())]
        width = max(q_len[a] + p_len[b] - 1 for a, b in rows)
        n = len(rows)
        ids = q_ids.new_full((n, width), self.pad_id)
        mask = q_mask.new_zeros((n, width))
        types = q_ids.new_zeros((n, width))
        for k, (a, b) in enumerate(rows):
            lq, lp = q_len[a], p_len[b] - 1
            ids[k, :lq] = q_ids[a, :lq]
            ids[k, lq:lq + lp] = p_ids[b, 1:lp + 1]
            mask[k, :lq + lp] = 1
            types[k, lq:lq + lp] = 1
        return self.model(ids, mask, types if self._token_types else None).float()

    # -- saving --------------------------------------------------------------------------------------------------

    def save(self, directory: str | Path, tokenizer: Any, card: Any, extra: dict[str, Any] | None = None,
             final_path: str | Path | None = None) -> Path:
        """Write the hub layout of this architecture's re-ranker kind, a ``kd_pyserini_card.toml`` (kind, lengths)
        and ``kd_pyserini_train.json`` (``extra``).

        Raises:
            NonFiniteWeightsError: a weight is NaN or infinite (nothing is written).
        """
        from kd_pyserini.train.model import NonFiniteWeightsError

        out = Path(directory)
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteWeightsError(f"refusing to save non-finite weights to {out} ({len(bad)} tensors, e.g. "
                                        f"{bad[0]})")
        out.mkdir(parents=True, exist_ok=True)
        if self.architecture == "colbert":
            from kd_pyserini.encoding.colbert import save_colbert

            save_colbert(self.model, tokenizer, out, bert_model=self._recorded_base())
        elif self.architecture == "prettr":
            from kd_pyserini.encoding.prettr import save_prettr

            save_prettr(self.model, tokenizer, out)
        else:
            from kd_pyserini.encoding.cross_encoder import save_bert_cat

            save_bert_cat(self.model, tokenizer, out, bert_model=self._recorded_base())
        dest = Path(final_path) if final_path is not None else out
        qlen, plen = int(card.query_max_length or 30), int(card.passage_max_length or 200)
        lines = [f'name = "{dest.resolve().name or self.architecture}"', f'kind = "{self.kind}"']
        if self.architecture == "bert-cat":
            lines += ['family = "bert-cat"', f"max_length = {qlen + plen}"]
        else:
            lines += [f"query_max_length = {qlen}", f"passage_max_length = {plen}",
                      f"query_mask_tokens = {QUERY_MASK_TOKENS}"]
            if self.architecture == "colbert":
                lines.append(f"compression_dim = {int(self.model.compressor.out_features)}")
            else:
                lines.append(f"join_layer_idx = {int(self.model.join_layer_idx)}")
        (out / "kd_pyserini_card.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if extra is not None:
            (out / "kd_pyserini_train.json").write_text(json.dumps({**extra, "architecture": self.architecture},
                                                                   indent=2, default=str) + "\n")
        return out

    def _recorded_base(self) -> str:
        """The ``bert_model`` a saved config names: the starting point, unless layers were cut (then its config would
        not fit the weights: a name that does not resolve, so the loader reads the configuration off the weights)."""
        cfg = self.transformer().config
        total = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layers", None)
        return f"{self.base} ({total} layers kept)" if self.layers_cut else self.base


# ------------------------------------------------------------------------------------------------ building

def bert_as_distilbert(bert: nn.Module) -> nn.Module:
    """A ``DistilBertModel`` computing exactly what a BERT encoder (all-MiniLM-L6-v2, ...) does on token type 0
    inputs: the same layers (query/key/value/output, layer norms, feed-forward) renamed, and the token type 0
    embedding added into every position embedding. Raises ValueError for a base that is not BERT-like."""
    from transformers import DistilBertConfig, DistilBertModel

    cfg = bert.config
    if getattr(cfg, "model_type", None) == "distilbert":
        return bert
    if getattr(cfg, "model_type", None) != "bert" or getattr(cfg, "hidden_act", "gelu") != "gelu":
        raise ValueError(f"a PreTTR student starts from a DistilBERT or a BERT with GELU; this base is a "
                         f"{getattr(cfg, 'model_type', '?')!r}")
    dcfg = DistilBertConfig(vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_position_embeddings,
                            dim=cfg.hidden_size, hidden_dim=cfg.intermediate_size, n_layers=cfg.num_hidden_layers,
                            n_heads=cfg.num_attention_heads, dropout=cfg.hidden_dropout_prob,
                            attention_dropout=cfg.attention_probs_dropout_prob, activation="gelu",
                            pad_token_id=cfg.pad_token_id or 0)
    out = DistilBertModel(dcfg)
    sd = bert.state_dict()
    new: dict[str, torch.Tensor] = {
        "embeddings.word_embeddings.weight": sd["embeddings.word_embeddings.weight"],
        "embeddings.position_embeddings.weight": sd["embeddings.position_embeddings.weight"]
        + sd["embeddings.token_type_embeddings.weight"][0],
        "embeddings.LayerNorm.weight": sd["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": sd["embeddings.LayerNorm.bias"]}
    names = {"attention.self.query": "attention.q_lin", "attention.self.key": "attention.k_lin",
             "attention.self.value": "attention.v_lin", "attention.output.dense": "attention.out_lin",
             "attention.output.LayerNorm": "sa_layer_norm", "intermediate.dense": "ffn.lin1",
             "output.dense": "ffn.lin2", "output.LayerNorm": "output_layer_norm"}
    for i in range(cfg.num_hidden_layers):
        for src, dst in names.items():
            for p in ("weight", "bias"):
                new[f"transformer.layer.{i}.{dst}.{p}"] = sd[f"encoder.layer.{i}.{src}.{p}"]
    missing, unexpected = out.load_state_dict(new, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise ValueError(f"BERT -> DistilBERT: {len(missing)} weights missing, {len(unexpected)} unexpected")
    return out


def new_pair_student(architecture: str, base: str, student_layers: int | None = None,
                     compression_dim: int = 768, join_layer_idx: int | None = None) -> tuple[PairStudent, Any]:
    """``(student, tokenizer)``: a fresh ``architecture`` student from ``base`` (a model folder, cached hub id or
    encoder card), optionally cut to ``student_layers`` layers (:func:`kd_pyserini.train.model.keep_layers`).

    Raises:
        ValueError / ModelLoadError / StudentLayersError: one line each.
    """
    from transformers import AutoModel

    from kd_pyserini.encoding import load_model
    from kd_pyserini.train.model import _layer_list, keep_layers, resolve_student_card

    card = resolve_student_card(base)
    tokenizer, _ = load_model(card)
    location = str(card.model_location())
    hf = AutoModel.from_pretrained(location)
    cut = False
    if student_layers is not None:
        holder, attr = _layer_list(hf)
        total = len(getattr(holder, attr))
        cut = len(keep_layers(hf, student_layers)) != total
    # built in memory from the loaded transformer (as new_colbert_student / new_prettr_student /
    # new_bert_cat_student build them from a folder): under torchrun every rank builds its own
    if architecture == "colbert":
        from kd_pyserini.encoding.colbert import ColBERTModel

        model: nn.Module = ColBERTModel(hf, compression_dim)
    elif architecture == "prettr":
        from kd_pyserini.encoding.prettr import PreTTRModel

        hf = bert_as_distilbert(hf)
        layers = int(hf.config.n_layers)
        join = join_layer_idx if join_layer_idx is not None else min(PRETTR_JOIN, max(1, layers - 1))
        model = PreTTRModel(hf.config, join)
        model.embeddings.load_state_dict(hf.embeddings.state_dict())
        model.transformer.load_state_dict(hf.transformer.state_dict())
    elif architecture == "bert-cat":
        from kd_pyserini.encoding.cross_encoder import BertCat

        model = BertCat(hf)
    else:
        raise ValueError(f"architecture {architecture!r} is not one of {', '.join(PAIR_ARCHITECTURES)}")
    student = PairStudent(architecture, model.train(), tokenizer, location)
    student.layers_cut = cut
    return student, tokenizer


def load_pair_student(architecture: str, folder: str | Path) -> tuple[PairStudent, Any]:
    """``(student, tokenizer)`` from a checkpoint :meth:`PairStudent.save` wrote (``--resume``), in train mode.

    Raises:
        ModelLoadError: the folder is not a checkpoint of that architecture (one line).
    """
    from kd_pyserini.cards import get_reranker_card
    from kd_pyserini.encoding.loading import ModelLoadError

    folder = Path(folder)
    card = get_reranker_card(str(folder))
    if card.kind != PAIR_KINDS[architecture]:
        raise ModelLoadError(f"{folder} holds a {card.kind} model, not a {architecture} student; resume with "
                             f"--architecture matching the checkpoint")
    if architecture == "colbert":
        from kd_pyserini.encoding.colbert import load_colbert

        tokenizer, model = load_colbert(folder, card)
    elif architecture == "prettr":
        from kd_pyserini.encoding.prettr import load_prettr

        tokenizer, model = load_prettr(folder, card)
    else:
        from kd_pyserini.encoding.cross_encoder import load_cross_encoder

        tokenizer, model = load_cross_encoder(card)
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    recorded = str(cfg.get("bert_model") or folder)
    for p in model.parameters():
        p.requires_grad_(True)
    student = PairStudent(architecture, model.train(), tokenizer, recorded.rsplit(" (", 1)[0] if recorded.endswith(" layers kept)") else recorded)
    student.layers_cut = recorded.endswith(" layers kept)")
    return student, tokenizer
