"""Where the training-throughput gap between kd_pyserini's trainer and sentence-transformers' trainer comes from,
measured part by part on the same batches (the ``training_gap`` benchmark):

* **padding**: token positions a batch of 32 triples puts through the encoder: kd (queries and passages
  de-duplicated, queries truncated at 30, passages sorted by length in two buckets each padded to its own longest)
  vs sentence-transformers (three columns, each padded to its longest, one max length for all: 200);
* **tokenisation**: milliseconds a batch for kd's ``Collator`` vs sentence-transformers' own ``preprocess`` of the
  three columns (kd also tokenises the next batch in a background thread while the current one trains);
* **optimizer**: milliseconds of one AdamW step over the student's 66M parameters: kd-train's own
  (``kd_pyserini.train.parts.make_optimizer``: fused on the CPU since session 5, as the Hugging Face Trainer's) vs
  torch's default (``foreach``, what kd-train used on the CPU before), interleaved;
* **autocast**: forward + backward of one kd batch in fp32 and under CPU bf16 autocast (the same student), interleaved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Result, Settings, interleave, st_encoder, tasb_model

__all__ = ["bench_training_gap"]


def bench_training_gap(s: Settings) -> Result:
    import torch
    from transformers import AutoTokenizer

    from kd_pyserini.train.batches import Collator

    from .training import _triples

    r = Result("training_gap")
    model = str(tasb_model(s))
    n_batches = 2 if s.quick else 6
    triples = _triples(s, 32 * n_batches)
    batches = [triples[i * 32:(i + 1) * 32] for i in range(n_batches)]
    tok = AutoTokenizer.from_pretrained(model)
    collate = Collator(tok, 30, 200, passage_buckets=2)
    st = st_encoder(model, 200)
    prep = getattr(st, "preprocess", None) or st.tokenize

    def st_tokenize(b: list[Any]) -> list[dict[str, Any]]:
        return [prep([getattr(t, col) for t in b]) for col in ("query", "pos", "neg")]

    # padding
    kd_tokens = [collate(b).padded_tokens for b in batches]
    st_tokens = [sum(int(f["input_ids"].numel()) for f in st_tokenize(b)) for b in batches]
    real = [sum(len(x) for col in ("query", "pos", "neg")
                for x in tok([getattr(t, col) for t in b], truncation=True,
                             max_length=30 if col == "query" else 200)["input_ids"]) for b in batches]
    r.add("token positions a batch (real + padding), kd vs sentence-transformers", float(np.mean(kd_tokens)),
          float(np.mean(st_tokens)), "tokens", higher_is_better=False, ours_label="kd collator",
          note=f"real tokens {np.mean(real):.0f}")
    # tokenisation
    t = interleave({"kd": lambda: [collate(b) for b in batches], "st": lambda: [st_tokenize(b) for b in batches]},
                   rounds=3, warmup=1)
    r.add("tokenisation ms a batch, kd Collator vs sentence-transformers preprocess",
          1e3 * min(t["kd"]) / n_batches, 1e3 * min(t["st"]) / n_batches, "ms", higher_is_better=False,
          ours_label="kd collator", note="kd overlaps it with the step (background thread)")
    # optimizer
    from transformers import AutoModel

    net = AutoModel.from_pretrained(model)
    params = [p for p in net.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    from types import SimpleNamespace

    from kd_pyserini.train.parts import make_optimizer

    kd_opt = make_optimizer(net, SimpleNamespace(lr=1e-9, weight_decay=0.01), torch.device("cpu"))
    opts = {"kd-train (make_optimizer)": kd_opt,
            "foreach (torch default)": torch.optim.AdamW(params, lr=1e-9, foreach=True)}
    t = interleave({k: o.step for k, o in opts.items()}, rounds=3, warmup=1)
    ms = {k: 1e3 * min(v) for k, v in t.items()}
    fused = bool(kd_opt.defaults.get("fused"))
    r.add("AdamW step ms, 66M parameters: kd-train's vs torch default foreach", ms["kd-train (make_optimizer)"],
          ms["foreach (torch default)"], "ms", higher_is_better=False,
          ours_label="kd fused" if fused else "kd (not fused)")
    # autocast: forward + backward of one kd batch
    b = collate(batches[0])
    net.train()

    def fwd_bwd(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            q = net(input_ids=b.q_ids, attention_mask=b.q_mask).last_hidden_state[:, 0]
            ps = torch.cat([net(input_ids=i, attention_mask=m).last_hidden_state[:, 0]
                            for i, m in zip(b.p_ids, b.p_mask)])
            qs = q[b.q_index]
            loss = ((qs * ps[b.pos_index]).sum(-1) - (qs * ps[b.neg_index]).sum(-1) - b.teacher_margin).pow(2).mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    t = interleave({"fp32": lambda: fwd_bwd(False), "bf16": lambda: fwd_bwd(True)}, rounds=1 if s.quick else 2,
                   warmup=1)
    r.add("forward + backward s a batch, bf16 autocast vs fp32 (same student, kd batch)", min(t["bf16"]),
          min(t["fp32"]), "s", higher_is_better=False, ours_label="bf16 autocast")
    r.extra["tokens"] = {"kd": kd_tokens, "st": st_tokens, "real": real}
    r.notes.append(f"{n_batches} batches of 32 MS MARCO training triples; the Pyserini column holds the other side "
                   "of each comparison (sentence-transformers, torch's default AdamW, fp32), named in the metric.")
    return r
