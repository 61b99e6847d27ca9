"""Loss balancer: gradient shares follow the weights whatever the losses' scales."""

from __future__ import annotations

import pytest
import torch

from mimi.training.balancer import Balancer




def _shares(total: torch.Tensor, grads: list[torch.Tensor]) -> list[float]:
    """Write total = sum_i a_i g_i (least squares) and return |a_i g_i| / sum_j |a_j g_j|."""
    basis = torch.stack([g.reshape(-1) for g in grads], dim=1).double()  # [N, k]
    coef = torch.linalg.lstsq(basis, total.reshape(-1, 1).double()).solution[:, 0]
    parts = [abs(float(c)) * float(g.norm()) for c, g in zip(coef, grads)]
    return [p / sum(parts) for p in parts]


def test_gradient_shares_match_weights_for_losses_of_different_scales():
    torch.manual_seed(0)
    model = torch.nn.Conv1d(1, 1, 9, padding=4)
    target = torch.randn(4, 1, 400)
    noise = torch.randn(4, 1, 400)
    balancer = Balancer({"big": 3.0, "small": 1.0})
    for step in range(6):
        x = noise + 0.01 * step
        y = model(x)
        losses = {"big": 1e4 * (y - target).pow(2).mean(), "small": 1e-4 * (y - x).abs().mean()}
        raw = [torch.autograd.grad(v, y, retain_graph=True)[0] for v in losses.values()]
        ratio = float(raw[0].norm() / raw[1].norm())
        assert ratio > 1e6  # the raw gradients differ by many orders of magnitude
        seen: list[torch.Tensor] = []  # gradients reaching y; the last one is the balanced sum
        y.register_hook(lambda g: seen.append(g.detach().clone()))
        model.zero_grad(set_to_none=True)
        norms = balancer.backward(losses, y)
        assert set(norms) == {"big", "small"}
        assert norms["big"] == pytest.approx(float(raw[0].norm()), rel=1e-5)
        shares = _shares(seen[-1], raw)
        assert shares[0] == pytest.approx(0.75, rel=0.1) and shares[1] == pytest.approx(0.25, rel=0.1)
        assert float(seen[-1].norm()) == pytest.approx(1.0, rel=0.3)  # about `total_norm`
        assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()
        with torch.no_grad():  # plain SGD step (torch.optim's first use is slow to import)
            for p in model.parameters():
                p -= 1e-3 * p.grad


def test_first_step_is_exact_normalised_sum():
    y = torch.randn(2, 1, 50, requires_grad=True)
    out = y * 1.0
    t1, t2 = torch.randn(2, 1, 50), torch.randn(2, 1, 50)
    losses = {"a": 50 * (out - t1).pow(2).sum(), "b": (out - t2).abs().mean()}
    ga, gb = (torch.autograd.grad(v, out, retain_graph=True)[0] for v in losses.values())
    Balancer({"a": 1.0, "b": 1.0}, total_norm=2.0).backward(losses, out)
    expected = 2.0 * (0.5 * ga / ga.norm() + 0.5 * gb / gb.norm())
    torch.testing.assert_close(y.grad, expected)


def test_unbalanced_losses_are_rejected_and_state_roundtrips():
    y = torch.randn(3, requires_grad=True)
    out = y * 2.0
    other = torch.randn(3, requires_grad=True)
    balancer = Balancer({"a": 1.0, "commit": 1.0, "off": 0.0})
    with pytest.raises(ValueError, match="directly"):
        balancer.backward({"a": out.sum(), "commit": other.pow(2).sum()}, out)
    with pytest.raises(ValueError, match="weight"):
        balancer.backward({"unknown": out.sum()}, out)
    balancer = Balancer({"a": 1.0, "off": 0.0})
    norms = balancer.backward({"a": out.pow(2).sum(), "off": out.sum()}, out)
    assert set(norms) == {"a"}  # zero weight: skipped
    state = balancer.state_dict()
    fresh = Balancer({"a": 1.0, "off": 0.0})
    fresh.load_state_dict(state)
    assert fresh.average_norm("a") == pytest.approx(balancer.average_norm("a"))
    assert fresh.average_norm("off") is None
