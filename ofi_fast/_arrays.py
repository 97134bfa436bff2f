"""Input conversion at the Python edge: any array-like becomes a contiguous 1-D array of the
kernel's dtype (converted, not rejected: lists, other dtypes, strided and read-only arrays are
fine); wrong dimensions or lengths raise OFIError naming the field."""

from __future__ import annotations

import numpy as np

from ofi_fast.errors import OFIError


def column(x, dtype, field: str, n: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous 1-D array of ``dtype``; its length must be ``n`` when given."""
    try:
        a = np.ascontiguousarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise OFIError(f"{field} cannot be read as {np.dtype(dtype).name}: {exc}",
                       field=field) from None
    if a.ndim != 1:
        raise OFIError(f"{field} must be 1-D, got shape {a.shape}", field=field)
    if n is not None and a.shape[0] != n:
        raise OFIError(f"{field} has {a.shape[0]} elements, expected {n}", field=field)
    return a


def output(out, n: int, field: str = "out", dtype=np.float64) -> np.ndarray:
    """A fresh output array, or the caller's ``out`` checked for dtype, shape and contiguity."""
    if out is None:
        return np.empty(n, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != np.dtype(dtype) or out.shape != (n,) \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise OFIError(f"{field} must be a writeable contiguous {np.dtype(dtype).name} array of "
                       f"shape ({n},)", field=field)
    return out
