"""PreTTR (split) re-ranker, as Hofstätter et al. 2020 (arXiv 2010.02666) distil it with Margin-MSE.

PreTTR: Sean MacAvaney, Franco Maria Nardini, Raffaele Perego, Nicola Tonellotto, Nazli Goharian and Ophir Frieder.
"Efficient Document Re-Ranking for Transformers by Precomputing Term Representations". SIGIR 2020 (arXiv 2004.14255);
here, as in the authors' version, without its compression. The layout is the one of the notebook
``minimal_prettr_usage_example.ipynb`` (github.com/sebastian-hofstaetter/neural-ranking-kd) and the hub model
``sebastian-hofstaetter/prettr-distilbert-split_at_3-margin_mse-T2-msmarco``: a ``DistilBertModel`` subclass (config
``architectures: ["PreTTR"]``; ``join_layer_idx`` 3) with weights ``embeddings.*``, ``transformer.layer.*`` and
``_classification_layer.weight`` (``Linear(dim, 1, bias=False)``).

The notebook's forward: the query (``[CLS] q [SEP]`` plus 8 ``[MASK]`` tokens, attention 1, exactly as for ColBERT)
and the passage without its ``[CLS]`` (``[p] [SEP]``) are embedded apart, the passage's positions offset by the
query's width (``query_input_ids.shape[-1]``); layers ``1..join_layer_idx`` read each apart, the remaining layers read
them concatenated (masks concatenated); the score is the classification layer on position 0 (the query's ``[CLS]``).

**The passage side depends on the query's width** through that position offset. Scored without a store, each query
uses its own width (the notebook's one-query forward). A passage store keeps layer-``k`` passage states computed at one
fixed width ``W`` (``query_width``, default ``query_max_length + query_mask_tokens``); a re-ranker with a store (or
given ``query_width``) offsets every passage by ``W``, which is exactly the notebook's forward on a query padded to
``W`` tokens (padding masked). Both are the checkpoint's own computation; they differ from each other only by the
passage positions.

Students: :func:`new_prettr_student` (a DistilBERT split at ``join_layer_idx``, fresh classification layer),
:func:`prettr_pair_scores` (the differentiable batched forward, for Margin-MSE) and :func:`save_prettr` (the hub layout,
which :class:`PreTTRReranker` loads back).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kd_pyserini.encoding.checkpoints import _IGNORABLE, _load_tokenizer, _read_state_dict
from kd_pyserini.encoding.interaction import TokenInteractionReranker
from kd_pyserini.encoding.loading import ModelLoadError

__all__ = ["PreTTRModel", "PreTTRReranker", "load_prettr", "prettr_pair_scores", "new_prettr_student",
           "save_prettr"]


class PreTTRModel(torch.nn.Module):
    """A DistilBERT (``embeddings``, ``transformer.layer``) run split at ``join_layer_idx``, plus
    ``_classification_layer``; attribute names match the checkpoint's keys."""

    def __init__(self, config: Any, join_layer_idx: int):
        super().__init__()
        from transformers import DistilBertModel

        base = DistilBertModel(config)
        self.config = base.config
        self.embeddings, self.transformer = base.embeddings, base.transformer
        self._classification_layer = torch.nn.Linear(config.dim, 1, bias=False)
        if not 1 <= join_layer_idx < config.n_layers:
            raise ValueError(f"join_layer_idx {join_layer_idx} must lie in 1..{config.n_layers - 1}")
        self.join_layer_idx = join_layer_idx

    def _mask(self, x: torch.Tensor, mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=mask)

    def lower(self, ids: torch.Tensor, mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Embeddings (positions ``offset..``) and layers ``1..join_layer_idx`` of one side: ``(B, L, dim)``."""
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids) + offset
        x = self.embeddings(ids, position_ids=pos)
        m = self._mask(x, mask)
        for layer in self.transformer.layer[:self.join_layer_idx]:
            x = layer(x, attention_mask=m)
        return x

    def upper(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The joint layers on concatenated states, then the classification layer on position 0: ``(B,)``."""
        m = self._mask(x, mask)
        for layer in self.transformer.layer[self.join_layer_idx:]:
            x = layer(x, attention_mask=m)
        return self._classification_layer(x[:, 0, :]).squeeze(-1)


def load_prettr(folder: Path, card: Any) -> tuple[Any, PreTTRModel]:
    """``(tokenizer, model)`` from a folder in the hub layout (see the module docstring).

    Raises:
        ModelLoadError: not that layout, or weights that do not fit (one line naming the folder).
    """
    from transformers import DistilBertConfig

    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if str(cfg.get("model_type", "distilbert")).lower() != "distilbert":
        raise ModelLoadError(f"{folder / 'config.json'}: model_type {cfg.get('model_type')!r}; a PreTTR checkpoint is "
                             "a DistilBERT ('distilbert')")
    config = DistilBertConfig.from_dict({k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    join = int(cfg.get("join_layer_idx") or card.join_layer_idx)
    sd = _read_state_dict(folder)
    head = sd.get("_classification_layer.weight")
    if head is None or not any(k.startswith("transformer.layer.") for k in sd):
        raise ModelLoadError(f"{folder}: not the PreTTR layout (expected weights 'embeddings.*', "
                             "'transformer.layer.*' and '_classification_layer.weight')")
    model = PreTTRModel(config, join)
    if tuple(head.shape) != (1, config.dim):
        raise ModelLoadError(f"{folder}: _classification_layer.weight has shape {tuple(head.shape)}; expected "
                             f"(1, {config.dim})")
    body = {k: v for k, v in sd.items() if not k.startswith("_classification_layer.")}
    missing, unexpected = model.load_state_dict({**body, "_classification_layer.weight": head.float()},
                                                strict=False)
    missing = [k for k in missing if not k.endswith(_IGNORABLE)]
    unexpected = [k for k in unexpected if not k.endswith(_IGNORABLE)]
    if missing or unexpected:
        raise ModelLoadError(f"{folder}: the weights do not fit a {config.n_layers}-layer DistilBERT ({len(missing)} "
                             f"missing, e.g. {(missing or ['-'])[0]}; {len(unexpected)} unexpected, e.g. "
                             f"{(unexpected or ['-'])[0]})")
    return _load_tokenizer(folder, [card.tokenizer or ""], auto=True), model.eval()


class PreTTRReranker(TokenInteractionReranker):
    """A PreTTR re-ranker (card kind ``split``).

    Args:
        query_width: offset every passage by this many positions (queries are treated as padded to it); ``None``:
            each query's own width, or the store's width when a store is attached. Other options as for
            :class:`~kd_pyserini.encoding.interaction.TokenInteractionReranker`.
    """

    kind = "split"

    def __init__(self, card: Any, *args: Any, query_width: int | None = None, store: Any = None, **kwargs: Any):
        self.query_width = query_width
        super().__init__(card, *args, **kwargs)
        limit = int(self.model.config.max_position_embeddings)
        width = self.default_query_width()
        if (query_width or width) + self.passage_max_length - 1 > limit:
            raise ValueError(f"query width {query_width or width} + passage length {self.passage_max_length - 1} "
                             f"exceeds the model's {limit} positions")
        if query_width is not None and query_width < width:
            raise ValueError(f"query_width {query_width} is shorter than the longest query ({width} tokens: "
                             f"{self.query_max_length} + {self.card.query_mask_tokens} [MASK])")
        if store is not None:
            self.attach_store(store)

    def default_query_width(self) -> int:
        """The longest query in tokens: ``query_max_length + query_mask_tokens`` (the store's default width)."""
        return self.query_max_length + self.card.query_mask_tokens

    def _load(self, folder: Path) -> tuple[Any, torch.nn.Module]:
        return load_prettr(folder, self.card)

    def _input_embeddings(self, model: torch.nn.Module) -> torch.nn.Embedding:
        return model.embeddings.word_embeddings

    def passage_tokens(self, passages: Sequence[str]) -> list[list[int]]:
        """``[p] [SEP]``: the passage cut at ``passage_max_length`` with its ``[CLS]``, then without it."""
        return [ids[1:] for ids in super().passage_tokens(passages)]

    def _offset(self, query_length: int) -> int:
        return int(self.query_width) if self.query_width is not None else query_length

    def _store_offset(self) -> int:
        return int(self.query_width or self.default_query_width())

    def _encode_queries(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.lower(ids, mask, 0)

    def _encode_passages(self, ids: torch.Tensor, mask: torch.Tensor, offset: int) -> torch.Tensor:
        return self.model.lower(ids, mask, offset)

    def _interact(self, q: Sequence[torch.Tensor], p: Sequence[torch.Tensor]) -> torch.Tensor:
        from torch.nn.utils.rnn import pad_sequence

        # [query states, passage states, padding]: attention is blind to order except through the positions, which
        # the states already carry, so this equals the notebook's [query + its padding, passage + its padding].
        joint = [torch.cat([a, b]) for a, b in zip(q, p)]
        x = pad_sequence(joint, batch_first=True)
        mask = pad_sequence([torch.ones(len(j), dtype=torch.long, device=x.device) for j in joint], batch_first=True)
        dtype = next(self.model.parameters()).dtype
        return self.model.upper(x.to(dtype), mask)

    def attach_store(self, store: Any) -> None:
        """As :meth:`TokenInteractionReranker.attach_store`; the store's width becomes :attr:`query_width`.

        Raises:
            PassageStoreError: another model or weights, or a ``query_width`` other than the store's.
        """
        from kd_pyserini.encoding.stored_passages import PassageStore, PassageStoreError

        store = store if isinstance(store, PassageStore) else PassageStore(store)
        width = int(store.info["encoder"].get("query_width") or 0)
        if self.query_width is not None and self.query_width != width:
            raise PassageStoreError(f"{store.path} holds passage states at query width {width}, not "
                                    f"{self.query_width}; drop query_width or build another store")
        self.query_width = width
        try:
            super().attach_store(store)
        except Exception:
            self.query_width = None
            raise

    def store_key(self) -> dict[str, Any]:
        return {**super().store_key(), "join_layer_idx": self.model.join_layer_idx,
                "query_width": self._store_offset()}


# ------------------------------------------------------------------------------------------------------------------
# Students (Margin-MSE training): differentiable pieces and the hub layout on disk
# ------------------------------------------------------------------------------------------------------------------

def prettr_pair_scores(model: PreTTRModel, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: torch.Tensor,
                       p_mask: torch.Tensor) -> torch.Tensor:
    """Scores ``(B,)`` of aligned rows, differentiable: the notebook's batched ``forward`` (the passage ids with their
    ``[CLS]``, which is dropped; passage positions offset by the padded query width ``q_ids.shape[1]``; query and
    passage masks concatenated). Queries must already carry their ``[MASK]`` tokens."""
    p_ids, p_mask = p_ids[:, 1:], p_mask[:, 1:]
    q = model.lower(q_ids, q_mask, 0)
    p = model.lower(p_ids, p_mask, int(q_ids.shape[1]))
    return model.upper(torch.cat([q, p], 1), torch.cat([q_mask, p_mask], 1))


def new_prettr_student(base: str | Path, join_layer_idx: int = 3) -> PreTTRModel:
    """A PreTTR to train: the embeddings and layers of a DistilBERT folder (or cached hub id) split at
    ``join_layer_idx``, and a fresh ``_classification_layer``."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(base))
    if config.model_type != "distilbert":
        raise ModelLoadError(f"{base}: a PreTTR student starts from a DistilBERT, not {config.model_type!r}")
    model = PreTTRModel(config, join_layer_idx)
    src = AutoModel.from_pretrained(str(base))
    model.embeddings.load_state_dict(src.embeddings.state_dict())
    model.transformer.load_state_dict(src.transformer.state_dict())
    return model


def save_prettr(model: PreTTRModel, tokenizer: Any, folder: str | Path) -> Path:
    """Write ``model`` in the hub layout :func:`load_prettr` reads (a DistilBERT config with ``architectures:
    ["PreTTR"]`` and ``join_layer_idx``; ``model.safetensors`` with ``embeddings.*``, ``transformer.layer.*``,
    ``_classification_layer.weight``; the tokenizer), each file under a temporary name, then renamed."""
    from safetensors.torch import save_file

    from kd_pyserini.atomic import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if not all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()):
        raise ValueError(f"refusing to save non-finite PreTTR weights into {folder}")
    tmp = folder / ".model.safetensors.tmp"
    save_file(sd, str(tmp))
    tmp.replace(folder / "model.safetensors")
    cfg = {**model.config.to_dict(), "architectures": ["PreTTR"], "model_type": "distilbert",
           "join_layer_idx": model.join_layer_idx}
    with atomic_write(folder / "config.json") as f:
        json.dump(cfg, f, indent=2, default=str)
    tokenizer.save_pretrained(str(folder))
    return folder
