"""sparsemax and masked_softmax: hand-computed values, masking, dtypes and gradients."""

from __future__ import annotations

import pytest
import torch

from reranker.sparsemax import masked_softmax, sparsemax


def test_sparsemax_hand_computed():
    # [1, 2, 3]: only the max is in the support (1 + 2*2 = 5 <= 5 fails for k=2).
    assert torch.equal(sparsemax(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([0.0, 0.0, 1.0]))
    # [0.1, 0.2, 0.3]: all in the support, tau = (0.6 - 1) / 3 = -0.1333.
    out = sparsemax(torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(out, torch.tensor([0.7, 1.0, 1.3]) / 3)
    # [0.5, 1.0, 0.0, 0.9]: support {1.0, 0.9, 0.5}? k=3: 1 + 3*0.5 = 2.5 > 2.4, yes;
    # tau = (2.4 - 1) / 3 = 0.4667 -> [0.0333, 0.5333, 0, 0.4333].
    out = sparsemax(torch.tensor([0.5, 1.0, 0.0, 0.9]))
    expected = torch.tensor([0.5 - 1.4 / 3, 1.0 - 1.4 / 3, 0.0, 0.9 - 1.4 / 3])
    torch.testing.assert_close(out, expected)


def test_sparsemax_properties_random():
    torch.manual_seed(0)
    x = torch.randn(7, 5, 11) * 3
    for dim in (0, 1, 2, -1):
        out = sparsemax(x, dim=dim)
        assert out.shape == x.shape
        assert (out >= 0).all()
        torch.testing.assert_close(out.sum(dim=dim), torch.ones_like(out.sum(dim=dim)))
        # Order-preserving: the argmax always gets the largest weight.
        assert torch.equal(out.argmax(dim=dim), x.argmax(dim=dim))
    # Equal scores -> uniform; shift invariance.
    torch.testing.assert_close(sparsemax(torch.zeros(4)), torch.full((4,), 0.25))
    torch.testing.assert_close(sparsemax(x + 5.0), sparsemax(x))


def test_sparsemax_mask_respected():
    x = torch.tensor([[3.0, 1.0, 2.0, 100.0], [0.2, 0.1, -50.0, 0.3]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, True]])
    out = sparsemax(x, mask)
    # The huge masked score gets 0 and does not push the real ones out of the support.
    assert out[0, 3] == 0
    torch.testing.assert_close(out[0, :3], sparsemax(x[0, :3]))
    torch.testing.assert_close(out[1, [0, 1, 3]], sparsemax(x[1, [0, 1, 3]]))
    assert out[1, 2] == 0
    torch.testing.assert_close(out.sum(-1), torch.ones(2))


def test_sparsemax_all_masked_row_is_zero():
    x = torch.randn(3, 4)
    mask = torch.tensor([[True] * 4, [False] * 4, [True, False, False, False]])
    out = sparsemax(x, mask)
    assert not torch.isnan(out).any()
    assert torch.equal(out[1], torch.zeros(4))
    assert torch.equal(out[2], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    x.requires_grad_(True)
    sparsemax(x, mask).sum().backward()
    assert not torch.isnan(x.grad).any()


def test_sparsemax_broadcast_mask():
    x = torch.randn(2, 3, 5)
    mask = torch.tensor([True, True, False, True, False])
    out = sparsemax(x, mask)
    assert (out[..., 2] == 0).all() and (out[..., 4] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sparsemax_half_precision(dtype):
    torch.manual_seed(1)
    x = torch.randn(6, 9)
    mask = torch.rand(6, 9) > 0.3
    out = sparsemax(x.to(dtype), mask)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), sparsemax(x, mask), atol=1e-2, rtol=1e-2)
    assert (out[~mask] == 0).all()


def test_sparsemax_gradcheck_float64():
    torch.manual_seed(2)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor(
        [[True] * 6, [True, True, False, True, False, True], [False] * 6, [True] + [False] * 5]
    )
    assert torch.autograd.gradcheck(lambda z: sparsemax(z, mask), (x,))
    assert torch.autograd.gradcheck(lambda z: sparsemax(z, dim=0), (x,))


def test_sparsemax_gradient_zero_on_masked_positions():
    x = torch.randn(3, 5, requires_grad=True)
    mask = torch.tensor([[True, False, True, True, False]] * 3)
    (sparsemax(x, mask) * torch.randn(3, 5)).sum().backward()
    assert (x.grad[~mask] == 0).all()


def test_masked_softmax():
    x = torch.tensor([[1.0, 2.0, 30.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = masked_softmax(x, mask)
    torch.testing.assert_close(out[0, :2], torch.softmax(torch.tensor([1.0, 2.0]), -1))
    assert out[0, 2] == 0
    assert torch.equal(out[1], torch.zeros(3))
    torch.testing.assert_close(masked_softmax(x), torch.softmax(x, -1))
    assert masked_softmax(x.half(), mask).dtype == torch.float16
