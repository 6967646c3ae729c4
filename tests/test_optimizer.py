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


def test_a_checkpoint_of_an_unfused_optimizer_resumes_fused():
    """Checkpoints saved before CPU AdamW was fused record fused=None; resuming them (load_optimizer_state, what
    kd_pyserini.train.checkpoints.load_state calls) keeps the fused kernel, with the saved moments."""
    from kd_pyserini.train.parts import load_optimizer_state

    model = _model()
    cfg = TrainConfig(teacher="t.tsv", student="s", output="o")
    old = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.ndim >= 2]},
                             {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}],
                            lr=1e-3)  # how kd-train built it on the CPU before
    model(torch.randn(3, 16)).sum().backward()
    old.step()
    saved = old.state_dict()
    assert not saved["param_groups"][0].get("fused")
    new = make_optimizer(model, cfg, torch.device("cpu"))
    load_optimizer_state(new, saved)
    assert all(g["fused"] is True for g in new.param_groups)
    moment = next(iter(new.state.values()))["exp_avg"].clone()
    assert torch.equal(moment, next(iter(old.state.values()))["exp_avg"])
    new.step()  # the fused kernel takes the loaded state
