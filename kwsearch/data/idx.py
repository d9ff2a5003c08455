"""Decoder for the IDX format of MNIST and Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import torch

# IDX type codes (third byte of the magic number) to numpy dtypes; multi-byte types are big-endian.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Decode one IDX file's (uncompressed) bytes into a tensor of its stored shape.

    Raises ValueError naming ``name`` when the header or the size does not hold together.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{name}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{name}: IDX header announces {expected} bytes for shape {shape}, file has {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))
