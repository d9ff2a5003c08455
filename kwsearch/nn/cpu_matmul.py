"""A float32 matrix product that runs on oneDNN on a CPU, where torch's own runs on MKL.

torch multiplies float32 matrices on a CPU with MKL, whose code path for AMD processors leaves
half of an AVX-512 core idle, while its convolutions run on oneDNN, which uses all of it. On our
AMD EPYC machines (one thread) a 512x13824 by 13824x512 product, ``input_mixing``'s at
ResNet18's last stage at batch 32, ran at 92 GFLOP/s in MKL and 198 in oneDNN; the
KernelWarehouse mixing products (attention by cells, K = n cells, and their gradients) gained
1.3x to 3.5x. torch reaches oneDNN's matmul for dense tensors through ``mkldnn._linear_pointwise``,
the op its compiler emits for linear layers on a CPU; :func:`matmul` calls it forward and
backward for float32 CPU tensors and is ``a @ b`` everywhere else (GPUs, other dtypes, CPU
autocast, torch builds without oneDNN, inside ``torch.compile``, which picks its own kernels).
"""

from __future__ import annotations

import torch


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN = _onednn_available()

if _ONEDNN:
    from torch.utils.flop_counter import register_flop_formula

    # FlopCounterMode (count_macs) knows torch's products, not this op: without a formula the
    # products taken here would go uncounted, and a model's MACs would depend on its device.
    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _linear_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
        rows, inner = input_shape
        return 2 * rows * inner * weight_shape[0]


def _row_major(t: torch.Tensor) -> bool:
    return t.stride(1) == 1 and t.stride(0) >= t.shape[1]


def _dense_row_major(t: torch.Tensor) -> bool:
    return t.stride(1) == 1 and t.stride(0) == t.shape[1]


def _row_major_copy(t: torch.Tensor) -> torch.Tensor:
    # Not t.contiguous(): that keeps any stride of a dimension of size 1, which oneDNN reads.
    return t.new_empty(t.shape).copy_(t)


def _dense_matrix(t: torch.Tensor) -> torch.Tensor:
    """``t`` if it is a dense row- or column-major matrix, else a row-major copy (an expanded
    gradient, whose strides are zero; a slice, whose rows are padded). A weight with padded rows
    sends oneDNN to a reference kernel: a 64x1152 by 1152x112 product, the attention's gradient
    of a KernelWarehouse layer, took 185 ms that way and 0.1 ms dense."""
    return t if _dense_row_major(t) or _dense_row_major(t.t()) else _row_major_copy(t)


def _linear(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # A linear layer computes input @ weight.t(): the weight is b's transpose (a view, read in
    # either dense layout); the input is copied to row-major when it is not (oneDNN would copy it).
    weight = _dense_matrix(b).t()
    return torch.ops.mkldnn._linear_pointwise(
        a if _row_major(a) else _row_major_copy(a), weight, None, "none", [], ""
    )


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``, possibly as a transposed view. The input must be row-major, so when ``a`` is not
    (a gradient's ``a.t() @ grad``) the product is taken as ``(b.t() @ a.t()).t()`` if ``a.t()``
    serves as the weight uncopied and ``b`` is the smaller copy: input_mixing's weight gradient,
    13824x512 by 512x512, took 35 ms that way and 45 ms copying ``a``. A padded ``a`` (a slice) is
    copied either way, so it stays the input and ``b`` the weight."""
    if not _row_major(a) and _dense_row_major(a.t()) and b.numel() < a.numel():
        return _linear(b.t(), a.t()).t()
    return _linear(a, b)


class _OneDNNMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return _product(a, b).contiguous()  # callers view the product: it must be row-major

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        a, b = ctx.saved_tensors
        grad_a = _product(grad, b.t()) if ctx.needs_input_grad[0] else None
        grad_b = _product(a.t(), grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def takes_onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether :func:`matmul` runs ``a @ b`` on oneDNN."""
    return (
        _ONEDNN
        and torch.backends.mkldnn.enabled
        and a.device.type == "cpu"
        and a.dtype == b.dtype == torch.float32
        and a.dim() == b.dim() == 2
        and a.numel() > 0
        and b.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for matrices ``a`` (M, K) and ``b`` (K, N), on oneDNN for float32 CPU tensors."""
    return _OneDNNMatmul.apply(a, b) if takes_onednn(a, b) else a @ b
