"""kd-train's optimizer: AdamW with the fused kernel on the CPU too (the default multi-tensor AdamW was ~half of a
CPU training step), the same updates as the unfused one, no decay on biases and norms."""

from __future__ import annotations

import torch

from kd_pyserini.train.config import TrainConfig
from kd_pyserini.train.parts import make_optimizer


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))


def test_cpu_adamw_is_fused_and_updates_as_the_unfused_one():
    cfg = TrainConfig(teacher="t.tsv", student="s", output="o", lr=1e-2, weight_decay=0.1)
    fused_model, plain_model = _model(), _model()
    opt = make_optimizer(fused_model, cfg, torch.device("cpu"))
    assert opt.defaults.get("fused") is True
    ref = torch.optim.AdamW([{"params": [p for n, p in plain_model.named_parameters() if p.ndim >= 2],
                              "weight_decay": 0.1},
                             {"params": [p for n, p in plain_model.named_parameters() if p.ndim < 2],
                              "weight_decay": 0.0}], lr=1e-2, foreach=False)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    x = torch.randn(8, 16)
    for _ in range(5):
        for m, o in ((fused_model, opt), (plain_model, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
