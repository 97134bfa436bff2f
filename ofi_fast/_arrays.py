"""Input conversion at the Python edge.

- :func:`column`: any array-like becomes a contiguous 1-D array of the kernel's dtype. Float
  columns convert anything numeric (lists, other dtypes, strided and read-only arrays are
  fine). Integer columns (timestamps, sides) take integers or datetime64 only: float, bool,
  complex and string input is refused, never cast (a cast would turn NaN into INT64_MIN and
  3.7 into 3), and values beyond the dtype's range are refused.
- :func:`integer`: an integer argument (window, capacity, levels, ...) through
  ``operator.index``: ``3`` and ``numpy.int64(3)`` pass; ``3.0``, ``"3"``, ``Fraction(3)`` and
  ``True`` do not.

Every refusal is an :class:`~ofi_fast.errors.OFIError` naming the field.
"""

from __future__ import annotations

import operator

import numpy as np

from ofi_fast.errors import OFIError


def _integer_column(x, dtype: np.dtype, field: str) -> np.ndarray:
    a = x if isinstance(x, np.ndarray) else None
    if a is None:
        try:
            a = np.asarray(x)
        except (TypeError, ValueError, OverflowError) as exc:
            raise OFIError(f"{field} cannot be read as {dtype.name}: {exc}", field=field) from None
    kind = a.dtype.kind
    if kind == "M":
        if a.size and np.isnat(a).any():
            bad = int(np.flatnonzero(np.isnat(a.reshape(-1)))[0])
            raise OFIError(f"{field}[{bad}] is NaT", field=field, index=bad)
        return np.ascontiguousarray(a.view(np.int64), dtype=dtype)
    if kind in "iu":
        if a.size and a.dtype != dtype:
            info = np.iinfo(dtype)
            lo, hi = a.min(), a.max()
            if lo < info.min or hi > info.max:
                flat = a.reshape(-1)
                bad = int(np.flatnonzero((flat < info.min) | (flat > info.max))[0])
                raise OFIError(f"{field}[{bad}] = {flat[bad]} is outside the range of "
                               f"{dtype.name}", field=field, index=bad)
        return np.ascontiguousarray(a, dtype=dtype)
    if kind == "O" and a.size:
        # Python ints beyond int64 (numpy keeps them as objects), or mixed objects
        if all(type(v) is int for v in a.reshape(-1)):
            info = np.iinfo(dtype)
            flat = a.reshape(-1)
            for i, v in enumerate(flat):
                if not info.min <= v <= info.max:
                    raise OFIError(f"{field}[{i}] = {v} is outside the range of {dtype.name}",
                                   field=field, index=i)
            return np.ascontiguousarray(a, dtype=dtype)
    if a.size == 0 and kind in "fO":
        return np.ascontiguousarray(a, dtype=dtype)  # an empty list reads as float64
    what = {"f": "floats", "b": "booleans", "c": "complex numbers"}.get(kind, f"{a.dtype}")
    raise OFIError(f"{field} must be integers or datetime64, not {what} (values are never cast:"
                   f" convert explicitly, e.g. np.asarray(ts).astype(np.int64))", field=field)


def column(x, dtype, field: str, n: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous 1-D array of ``dtype``; its length must be ``n`` when given."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        a = _integer_column(x, dtype, field)
    else:
        try:
            a = np.ascontiguousarray(x, dtype=dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise OFIError(f"{field} cannot be read as {dtype.name}: {exc}",
                           field=field) from None
    if a.ndim != 1:
        raise OFIError(f"{field} must be 1-D, got shape {a.shape}", field=field)
    if n is not None and a.shape[0] != n:
        raise OFIError(f"{field} has {a.shape[0]} elements, expected {n}", field=field)
    return a


def integer(value, field: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int (``operator.index``), within ``minimum..maximum`` when given."""
    if isinstance(value, (bool, np.bool_)):
        raise OFIError(f"{field} must be an integer, not a bool ({value!r})", field=field)
    try:
        v = operator.index(value)
    except TypeError:
        raise OFIError(f"{field} must be an integer, got {type(value).__name__} {value!r:.80}",
                       field=field) from None
    if minimum is not None and v < minimum:
        raise OFIError(f"{field} must be >= {minimum}, got {v}", field=field)
    if maximum is not None and v > maximum:
        raise OFIError(f"{field} must be <= {maximum:,}, got {v:,}", field=field)
    return v


def output(out, n: int, field: str = "out", dtype=np.float64) -> np.ndarray:
    """A fresh output array, or the caller's ``out`` checked for dtype, shape and contiguity."""
    if out is None:
        return np.empty(n, dtype=dtype)
    if not isinstance(out, np.ndarray) or out.dtype != np.dtype(dtype) or out.shape != (n,) \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise OFIError(f"{field} must be a writeable contiguous {np.dtype(dtype).name} array of "
                       f"shape ({n},)", field=field)
    return out
