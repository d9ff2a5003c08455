"""Triton kernels of the fused KernelWarehouse 2-d convolution (:mod:`kwsearch.nn.triton_kw`).

Every kernel works on tiles that lie inside one mixture: an output tile never crosses a cell's
``cell_out`` rows, an input-channel tile never crosses its ``cell_in`` columns, and each step of
the contraction is one kernel position. A tile's weights are then one mix of the same tile of
every cell, ``sum_n alpha[b, m, n] * cells[n, tile]``, formed in registers: no per-sample kernel
is ever written to memory. Accumulation is in float32 whatever the inputs' dtype.

Indexing shared by the kernels, for kernel position ``kpos = kh * KW + kw``:

- mixture ``m = (s * OUT_GROUPS + og) * IN_GROUPS + ig`` with ``s = kpos // CELL_KERNEL``;
- element of a cell ``(co * CELL_IN + ci) * CELL_KERNEL + kpos % CELL_KERNEL``,

where ``CELL_KERNEL`` is 1 for spatially partitioned warehouses (1x1 cells, one mixture per
kernel position) and ``KH * KW`` for full-kernel cells (one spatial mixture): the layout
:meth:`kwsearch.nn.kernel_warehouse.KWConvNd.assemble` gives.

The kernels call only Triton's built-in operations, none of ``triton.language.standard``
(tl.zeros, tl.cdiv, tl.sum): those are jit functions themselves, fixed as compiled or interpreted
when triton is first imported, and the interpreter cannot call compiled ones; so these kernels
also interpret where something (``import torch._dynamo``, say) imported triton before
``TRITON_INTERPRET=1`` was set. (``_total`` hands tl.sum's combine function to tl.reduce, which
the interpreter recognises without calling it.) Triton decides whether to interpret when this
module is imported.

This module imports triton; import it only where triton is installed.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _total(tile):
    """Sum of a 2-d tile: tl.sum written out (see the module's note on the interpreter) with
    tl.sum's own combine function, which the interpreter recognises and runs as one numpy sum
    (any other combine function it calls element by element, several times slower)."""
    return tl.reduce(tl.reduce(tile, 1, tl.standard._sum_combine), 0, tl.standard._sum_combine)


@triton.jit
def _mixed_weight_tile(
    cells_ptr,
    alpha_ptr,
    alpha_row,  # offset of alpha[b, m, 0]
    cell_offsets,  # element of each tile entry within one cell
    mask,
    NUM_CELLS,
    CELL_NUMEL,
    SHAPE_0: tl.constexpr,
    SHAPE_1: tl.constexpr,
):
    """``sum_n alpha[b, m, n] * cells[n, cell_offsets]`` in float32 (zero where ``mask`` is off)."""
    weight = tl.full((SHAPE_0, SHAPE_1), 0.0, tl.float32)
    for n in range(NUM_CELLS):
        a = tl.load(alpha_ptr + alpha_row + n).to(tl.float32)
        cell = tl.load(cells_ptr + n * CELL_NUMEL + cell_offsets, mask=mask, other=0.0)
        weight += a * cell.to(tl.float32)
    return weight


@triton.jit
def _dot(a, b, acc, FP32_DOT: tl.constexpr):
    """acc + a @ b. With FP32_DOT the operands contract in full float32 (no TF32 rounding), as
    the other exact paths do for float32 inputs; the wrapper also asks for it under Triton's
    interpreter, whose tl.dot on bfloat16 returns garbage (triton 3.9), which for half inputs
    gives the same products (exact in float32) summed in another order."""
    if FP32_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def kw_conv2d_forward(
    x_ptr,
    cells_ptr,
    alpha_ptr,
    y_ptr,
    sxb,
    sxc,
    sxh,
    sxw,
    syb,
    syc,
    syh,
    syw,
    H,
    W,
    OH,
    OW,
    KW,
    KPOS,
    STRIDE_H,
    STRIDE_W,
    PAD_H,
    PAD_W,
    DIL_H,
    DIL_W,
    NUM_CELLS,
    CELL_OUT,
    CELL_IN,
    CELL_KERNEL,
    OUT_GROUPS,
    IN_GROUPS,
    MIXTURES,
    BLOCK_O: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    """y[b, o, p] = sum over (c, kh, kw) of W_b[o, c, kh, kw] * x[b, c, p's input position].

    Grid: (batch * output-position tiles, out_groups * tiles of cell_out).
    """
    position_tiles = (OH * OW + BLOCK_P - 1) // BLOCK_P
    b = tl.program_id(0) // position_tiles
    p = (tl.program_id(0) % position_tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    out_tiles = (CELL_OUT + BLOCK_O - 1) // BLOCK_O
    og = tl.program_id(1) // out_tiles
    co = (tl.program_id(1) % out_tiles) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_mask = co < CELL_OUT
    p_mask = p < OH * OW
    oh = p // OW
    ow = p % OW
    cell_numel = CELL_OUT * CELL_IN * CELL_KERNEL
    acc = tl.full((BLOCK_O, BLOCK_P), 0.0, tl.float32)
    for kpos in range(KPOS):
        ih = oh * STRIDE_H - PAD_H + (kpos // KW) * DIL_H
        iw = ow * STRIDE_W - PAD_W + (kpos % KW) * DIL_W
        inside = p_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        spatial = kpos // CELL_KERNEL
        for ig in range(IN_GROUPS):
            alpha_row = (b * MIXTURES + (spatial * OUT_GROUPS + og) * IN_GROUPS + ig) * NUM_CELLS
            for c0 in range(0, CELL_IN, BLOCK_C):
                ci = c0 + tl.arange(0, BLOCK_C)
                c_mask = ci < CELL_IN
                offsets = (co[:, None] * CELL_IN + ci[None, :]) * CELL_KERNEL + kpos % CELL_KERNEL
                weight = _mixed_weight_tile(
                    cells_ptr,
                    alpha_ptr,
                    alpha_row,
                    offsets,
                    o_mask[:, None] & c_mask[None, :],
                    NUM_CELLS,
                    cell_numel,
                    BLOCK_O,
                    BLOCK_C,
                )
                c = ig * CELL_IN + ci
                x_tile = tl.load(
                    x_ptr + b * sxb + c[:, None] * sxc + ih[None, :] * sxh + iw[None, :] * sxw,
                    mask=c_mask[:, None] & inside[None, :],
                    other=0.0,
                )
                acc = _dot(weight.to(x_tile.dtype), x_tile, acc, FP32_DOT)
    o = og * CELL_OUT + co
    tl.store(
        y_ptr + b * syb + o[:, None] * syc + oh[None, :] * syh + ow[None, :] * syw,
        acc.to(y_ptr.dtype.element_ty),
        mask=o_mask[:, None] & p_mask[None, :],
    )


@triton.jit
def kw_conv2d_input_grad(
    dy_ptr,
    cells_ptr,
    alpha_ptr,
    dx_ptr,
    sdb,
    sdc,
    sdh,
    sdw,
    sxb,
    sxc,
    sxh,
    sxw,
    H,
    W,
    OH,
    OW,
    KW,
    KPOS,
    STRIDE_H,
    STRIDE_W,
    PAD_H,
    PAD_W,
    DIL_H,
    DIL_W,
    NUM_CELLS,
    CELL_OUT,
    CELL_IN,
    CELL_KERNEL,
    OUT_GROUPS,
    IN_GROUPS,
    MIXTURES,
    BLOCK_O: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    """dx[b, c, q] = sum over (o, kh, kw) of W_b[o, c, kh, kw] * dy[b, o, output position of q]:
    the transposed convolution, with each W_b tile transposed and mixed on chip.

    Grid: (batch * input-position tiles, in_groups * tiles of cell_in).
    """
    position_tiles = (H * W + BLOCK_Q - 1) // BLOCK_Q
    b = tl.program_id(0) // position_tiles
    q = (tl.program_id(0) % position_tiles) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    in_tiles = (CELL_IN + BLOCK_C - 1) // BLOCK_C
    ig = tl.program_id(1) // in_tiles
    ci = (tl.program_id(1) % in_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = ci < CELL_IN
    q_mask = q < H * W
    ih = q // W
    iw = q % W
    cell_numel = CELL_OUT * CELL_IN * CELL_KERNEL
    acc = tl.full((BLOCK_C, BLOCK_Q), 0.0, tl.float32)
    for kpos in range(KPOS):
        # Output position that reads input q at this kernel position, where one does: the offset
        # must be a non-negative multiple of the stride (checked before dividing, so no negative
        # operand reaches // and %).
        th = ih + PAD_H - (kpos // KW) * DIL_H
        tw = iw + PAD_W - (kpos % KW) * DIL_W
        th_safe = tl.where(th >= 0, th, 0)
        tw_safe = tl.where(tw >= 0, tw, 0)
        oh = th_safe // STRIDE_H
        ow = tw_safe // STRIDE_W
        reached = (
            q_mask
            & (th >= 0)
            & (tw >= 0)
            & (th_safe % STRIDE_H == 0)
            & (tw_safe % STRIDE_W == 0)
            & (oh < OH)
            & (ow < OW)
        )
        spatial = kpos // CELL_KERNEL
        for og in range(OUT_GROUPS):
            alpha_row = (b * MIXTURES + (spatial * OUT_GROUPS + og) * IN_GROUPS + ig) * NUM_CELLS
            for o0 in range(0, CELL_OUT, BLOCK_O):
                co = o0 + tl.arange(0, BLOCK_O)
                o_mask = co < CELL_OUT
                offsets = (co[None, :] * CELL_IN + ci[:, None]) * CELL_KERNEL + kpos % CELL_KERNEL
                weight_t = _mixed_weight_tile(
                    cells_ptr,
                    alpha_ptr,
                    alpha_row,
                    offsets,
                    c_mask[:, None] & o_mask[None, :],
                    NUM_CELLS,
                    cell_numel,
                    BLOCK_C,
                    BLOCK_O,
                )
                o = og * CELL_OUT + co
                dy_tile = tl.load(
                    dy_ptr + b * sdb + o[:, None] * sdc + oh[None, :] * sdh + ow[None, :] * sdw,
                    mask=o_mask[:, None] & reached[None, :],
                    other=0.0,
                )
                acc = _dot(weight_t.to(dy_tile.dtype), dy_tile, acc, FP32_DOT)
    c = ig * CELL_IN + ci
    tl.store(
        dx_ptr + b * sxb + c[:, None] * sxc + ih[None, :] * sxh + iw[None, :] * sxw,
        acc.to(dx_ptr.dtype.element_ty),
        mask=c_mask[:, None] & q_mask[None, :],
    )


@triton.jit
def kw_conv2d_mixing_grads(
    x_ptr,
    dy_ptr,
    cells_ptr,
    alpha_ptr,
    cells_grad_ptr,
    alpha_grad_ptr,
    sxb,
    sxc,
    sxh,
    sxw,
    sdb,
    sdc,
    sdh,
    sdw,
    H,
    W,
    OH,
    OW,
    KW,
    STRIDE_H,
    STRIDE_W,
    PAD_H,
    PAD_W,
    DIL_H,
    DIL_W,
    NUM_CELLS,
    CELL_OUT,
    CELL_IN,
    CELL_KERNEL,
    OUT_GROUPS,
    IN_GROUPS,
    MIXTURES,
    BLOCK_O: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    FP32_DOT: tl.constexpr,
    CELLS_GRAD: tl.constexpr,
    ALPHA_GRAD: tl.constexpr,
):
    """Gradients of the cells and of alpha through one tile of one sample's weight gradient.

    The tile dW_b[o, c, kh, kw] = sum_p dy[b, o, p] * x[b, c, p's input position] stays on chip;
    it is contracted with alpha[b, m, :] into the cells' gradient and with the cells into
    alpha[b, m, :]'s gradient, both added atomically (float32): tiles of other samples, kernel
    positions and mixtures feed the same cells, and the tiles of one mixture the same alpha.

    Grid: (batch * out_groups * tiles of cell_out, kernel positions * in_groups * tiles of cell_in).
    """
    out_tiles = (CELL_OUT + BLOCK_O - 1) // BLOCK_O
    b = tl.program_id(0) // (OUT_GROUPS * out_tiles)
    og = (tl.program_id(0) // out_tiles) % OUT_GROUPS
    co = (tl.program_id(0) % out_tiles) * BLOCK_O + tl.arange(0, BLOCK_O)
    in_tiles = (CELL_IN + BLOCK_C - 1) // BLOCK_C
    kpos = tl.program_id(1) // (IN_GROUPS * in_tiles)
    ig = (tl.program_id(1) // in_tiles) % IN_GROUPS
    ci = (tl.program_id(1) % in_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)
    o_mask = co < CELL_OUT
    c_mask = ci < CELL_IN
    o = og * CELL_OUT + co
    c = ig * CELL_IN + ci
    kh = kpos // KW
    kw = kpos % KW
    weight_grad = tl.full((BLOCK_O, BLOCK_C), 0.0, tl.float32)
    for p0 in range(0, OH * OW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_mask = p < OH * OW
        oh = p // OW
        ow = p % OW
        ih = oh * STRIDE_H - PAD_H + kh * DIL_H
        iw = ow * STRIDE_W - PAD_W + kw * DIL_W
        inside = p_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        dy_tile = tl.load(
            dy_ptr + b * sdb + o[:, None] * sdc + oh[None, :] * sdh + ow[None, :] * sdw,
            mask=o_mask[:, None] & p_mask[None, :],
            other=0.0,
        )
        x_tile_t = tl.load(
            x_ptr + b * sxb + c[None, :] * sxc + ih[:, None] * sxh + iw[:, None] * sxw,
            mask=inside[:, None] & c_mask[None, :],
            other=0.0,
        )
        weight_grad = _dot(dy_tile, x_tile_t.to(dy_tile.dtype), weight_grad, FP32_DOT)
    mixture = ((kpos // CELL_KERNEL) * OUT_GROUPS + og) * IN_GROUPS + ig
    alpha_row = (b * MIXTURES + mixture) * NUM_CELLS
    offsets = (co[:, None] * CELL_IN + ci[None, :]) * CELL_KERNEL + kpos % CELL_KERNEL
    mask = o_mask[:, None] & c_mask[None, :]
    cell_numel = CELL_OUT * CELL_IN * CELL_KERNEL
    for n in range(NUM_CELLS):
        if CELLS_GRAD:
            a = tl.load(alpha_ptr + alpha_row + n).to(tl.float32)
            tl.atomic_add(cells_grad_ptr + n * cell_numel + offsets, a * weight_grad, mask=mask)
        if ALPHA_GRAD:
            cell = tl.load(cells_ptr + n * cell_numel + offsets, mask=mask, other=0.0).to(tl.float32)
            tl.atomic_add(alpha_grad_ptr + alpha_row + n, _total(cell * weight_grad))
