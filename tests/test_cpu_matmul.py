"""The float32 matrix product on oneDNN: the product and its gradients against float64."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kwsearch.nn.cpu_matmul import _dense_matrix, matmul, takes_onednn
from tests.helpers import assert_rel_close


def _layouts(rows: int, columns: int) -> dict[str, torch.Tensor]:
    """One float32 matrix stored row-major, column-major (a transposed view), and as a slice of
    a wider matrix in either layout (padded rows or columns)."""
    generator = torch.Generator().manual_seed(rows * columns)
    dense = torch.randn(rows, columns, generator=generator)
    return {
        "row-major": dense,
        "column-major": dense.t().contiguous().t(),
        "row slice": torch.randn(rows, columns + 3, generator=generator)[:, 2 : 2 + columns],
        "column slice": torch.randn(columns, rows + 1, generator=generator)[:, :rows].t(),
    }


LAYOUTS = ["row-major", "column-major", "row slice", "column slice"]


@pytest.mark.skipif(not takes_onednn(torch.ones(1, 1), torch.ones(1, 1)), reason="torch built without oneDNN")
@pytest.mark.parametrize("a_layout", LAYOUTS)
@pytest.mark.parametrize("b_layout", LAYOUTS)
@pytest.mark.parametrize("upstream", ["dense", "expanded"])
@pytest.mark.parametrize("shape", [(37, 53, 29), (1, 53, 29), (37, 53, 1), (37, 1, 29)], ids=str)
def test_product_and_gradients_match_float64(a_layout, b_layout, upstream, shape):
    rows, inner, columns = shape
    a = _layouts(rows, inner)[a_layout].requires_grad_(True)
    b = _layouts(inner, columns)[b_layout].requires_grad_(True)
    # An expanded gradient (zero strides) is what a sum's backward hands over.
    grad = (
        torch.randn(rows, columns) if upstream == "dense" else torch.randn(1, columns).expand(rows, columns)
    )
    a64, b64 = a.detach().double().requires_grad_(True), b.detach().double().requires_grad_(True)
    y, y64 = matmul(a, b), a64 @ b64
    assert_rel_close(y.double(), y64, rtol=1e-5)
    got = torch.autograd.grad(y, [a, b], grad)
    expected = torch.autograd.grad(y64, [a64, b64], grad.double())
    for g, e in zip(got, expected, strict=True):
        assert_rel_close(g.double(), e, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_onednn_is_given_dense_weights(layout):
    # A weight whose rows are padded (a slice: the attention without its zero cell) sends oneDNN
    # to a reference kernel, a thousand times slower: it gets a dense copy instead.
    matrix = _layouts(37, 53)[layout]
    given = _dense_matrix(matrix)
    assert given.is_contiguous() or given.t().is_contiguous()
    assert torch.equal(given, matrix)


@pytest.mark.skipif(not takes_onednn(torch.ones(1, 1), torch.ones(1, 1)), reason="torch built without oneDNN")
@pytest.mark.parametrize("a_layout", ["row-major", "column-major"])
def test_flop_counting_counts_the_onednn_product_as_torchs(a_layout):
    # count_macs counts with FlopCounterMode: a model's MACs must not depend on its device.
    a = _layouts(37, 53)[a_layout].requires_grad_(True)
    b = _layouts(53, 29)["row-major"].requires_grad_(True)

    def flops(product):
        with FlopCounterMode(display=False) as counter:
            product(a, b).sum().backward()
        return counter.get_total_flops()

    assert flops(matmul) == flops(torch.mm) == 3 * 2 * 37 * 53 * 29


def test_other_dtypes_and_autocast_take_torchs_product():
    a, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert not takes_onednn(a, b) and torch.equal(matmul(a, b), a @ b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a32, b32 = a.float(), b.float()
        assert not takes_onednn(a32, b32)
        assert matmul(a32, b32).dtype == torch.bfloat16  # autocast's product, as a @ b gives
