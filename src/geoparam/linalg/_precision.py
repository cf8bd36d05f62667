"""The precision the kernels compute in."""

from __future__ import annotations

import torch

# Half types lose orthogonality in products, and the CPU's LAPACK routines (LU, QR, triangular
# solves) do not take them: the kernels compute in single precision and cast back.
_WORKING_DTYPE = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.complex32: torch.complex64,
}


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype``, or the single-precision type that computes for it if it is a half type."""
    return _WORKING_DTYPE.get(dtype, dtype)
