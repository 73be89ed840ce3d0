"""make_sgd: the fused SGD where it applies, the same updates as torch.optim.SGD, and a fallback."""
from __future__ import annotations

import torch
from torch import nn

from ssdfast.engine.optim import make_sgd


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int = 5) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(2, 3, 9, 9, generator=g)).square().mean().backward()
        optimizer.step()


def test_fused_sgd_matches_the_default_one_with_param_groups():
    a, b = _model(), _model()
    options = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
    groups_a = [{"params": list(a[0].parameters()), "lr": 0.01}, {"params": list(a[1:].parameters())}]
    groups_b = [{"params": list(b[0].parameters()), "lr": 0.01}, {"params": list(b[1:].parameters())}]
    fused = make_sgd(groups_a, **options)
    plain = torch.optim.SGD(groups_b, **options)
    assert fused.defaults.get("fused") is True and not plain.defaults.get("fused")
    assert [g["lr"] for g in fused.param_groups] == [0.01, 0.1]
    _steps(a, fused)
    _steps(b, plain)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # the state dicts are interchangeable (a checkpoint resumes with either implementation)
    plain.load_state_dict(fused.state_dict())
    torch.testing.assert_close(plain.state[next(b.parameters())]["momentum_buffer"],
                               fused.state[next(a.parameters())]["momentum_buffer"])


def test_falls_back_where_the_fused_kernel_does_not_apply():
    params = [nn.Parameter(torch.ones(3, dtype=torch.float64)), nn.Parameter(torch.ones(2, dtype=torch.int64).float())]
    params[1].data = params[1].data.to(torch.complex64)  # complex: no fused SGD
    optimizer = make_sgd((p for p in params), lr=0.5)  # a generator is fine too
    assert not optimizer.defaults.get("fused") and len(optimizer.param_groups[0]["params"]) == 2
    params[0].grad = torch.ones(3, dtype=torch.float64)
    optimizer.step()
    assert torch.equal(params[0].detach(), torch.full((3,), 0.5, dtype=torch.float64))
