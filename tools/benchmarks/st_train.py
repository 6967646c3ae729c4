"""sentence-transformers' own trainer with ``MarginMSELoss``, run the way its documentation trains a Margin-MSE
bi-encoder, on the same student folder, triples, teacher margins and data order as kd_pyserini's trainer.

Used by :mod:`tools.benchmarks.training` (throughput, loss curve) and :mod:`tools.benchmarks.gpu` (the CUDA script).
Alignment with kd_pyserini's run: the same student weights (one folder), CLS pooling and dot product, batch 32, the
batches in the order kd's sampler drew them (a sequential batch sampler replays it), AdamW at the same learning rate
and weight decay, no warm-up, linear decay over the same number of steps, no gradient clipping, seed 42. What cannot
be aligned: dropout masks (both trainers draw them from their own RNG streams) and the query length: this
sentence-transformers model truncates every column at 200 tokens (kd: queries 30, passages 200); MS MARCO
training queries are shorter than 30 tokens almost always, so both pad queries to the same in-batch longest.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from typing import Any

from .common import PeakRSS, Skip, st_encoder

__all__ = ["st_trainer"]


def st_trainer(model: str, data: list[Any], order: list[list[int]], precision: str, steps: int,
               lr: float = 7e-6, weight_decay: float = 0.01, seed: int = 42, device: str = "cpu",
               out: str | None = None) -> dict[str, Any]:
    """``SentenceTransformerTrainer`` + ``MarginMSELoss`` for ``steps + 1`` optimizer steps (first one untimed).

    ``data``: triples (``query``, ``pos``, ``neg``, ``pos_score``, ``neg_score``); ``order``: batches of indices
    (kd's first-epoch order). ``precision``: ``fp32`` or ``bf16`` (the Trainer's ``bf16=True``: autocast) or
    ``fp16`` (CUDA). Returns triples/s, seconds a step, the per-step losses, the peak RSS growth and the
    optimizer the Trainer built.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="sentence_transformers")
    try:
        import accelerate  # noqa: F401  (the HF Trainer needs it)
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.sentence_transformer.losses import MarginMSELoss
        from torch.utils.data import BatchSampler, SequentialSampler
        from transformers import TrainerCallback
    except ImportError as e:
        raise Skip(f"sentence-transformers' trainer is not available here ({e}; it needs accelerate and datasets)") \
            from e
    import torch

    flat = [i for b in order[: steps + 1] for i in b]
    rows = [data[i] for i in flat]
    ds = Dataset.from_dict({"query": [t.query for t in rows], "positive": [t.pos for t in rows],
                            "negative": [t.neg for t in rows],
                            "label": [float(t.pos_score - t.neg_score) for t in rows]})
    st = st_encoder(model, 200, "fp32")  # weights stay fp32: bf16 is the Trainer's autocast
    if device != "cpu":
        st.to(device)
    st.train()
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    def sequential(dataset: Any, batch_size: int, drop_last: bool, **_: Any) -> BatchSampler:
        return BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last)

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=32, max_steps=steps + 1, learning_rate=lr,
            weight_decay=weight_decay, warmup_steps=0, lr_scheduler_type="linear", max_grad_norm=0.0, seed=seed,
            bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu", logging_steps=1,
            save_strategy="no", report_to="none", disable_tqdm=True, dataloader_drop_last=True,
            batch_sampler=sequential)
        trainer = SentenceTransformerTrainer(model=st, args=args, train_dataset=ds, loss=MarginMSELoss(st),
                                             callbacks=[Stamp()])
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # its per-step dicts on stdout; the losses are read below
        with PeakRSS() as m:
            trainer.train()
        opt = trainer.optimizer
        opt = getattr(opt, "optimizer", opt)  # accelerate wraps it
        desc = f"{type(opt).__name__}(fused={opt.defaults.get('fused')}, foreach={opt.defaults.get('foreach')})"
        losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"triples_per_s": 32 * len(gaps) / sum(gaps), "step_s": sum(gaps) / len(gaps), "peak_rss": m.delta,
            "losses": losses, "optimizer": desc}
