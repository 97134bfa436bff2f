"""Bars (time aggregation of per-event series) and, later, the price-impact model.

Clock bars follow DESIGN.md: bar k holds events with ``k*every <= ts < (k+1)*every`` (left
closed, right open, aligned to multiples of ``every``, labelled by the left edge ``start``),
from the first event's bar to the last event's bar, empty bars included (sum 0, count 0,
first/last NaN). Note Cont-Kukanov-Stoikov's eq. 12 uses right-closed intervals (t_{k-1}, t_k];
the choice only moves events that fall exactly on a boundary.
"""

cimport cython
from libc.math cimport NAN

import numpy as np

from ofi_fast._types cimport (
    STATUS_NON_FINITE, STATUS_OK, STATUS_TIME_BACKWARDS, float64_t, int64_t, intp_t,
)
from ofi_fast._arrays import column
from ofi_fast.errors import OFIError, raise_status


class Bars:
    """Per-bar arrays: ``start`` (int64, left edge in ts units), ``sum``, ``count`` (int64),
    ``first`` and ``last`` (the first/last value in the bar; NaN for an empty bar)."""

    __slots__ = ("start", "sum", "count", "first", "last", "every")

    def __init__(self, start, sum, count, first, last, every):
        self.start = start
        self.sum = sum
        self.count = count
        self.first = first
        self.last = last
        self.every = every

    def __len__(self):
        return self.start.shape[0]

    def __repr__(self):
        return f"Bars(n={len(self)}, every={self.every}, events={int(self.count.sum())})"

    def to_dict(self):
        """The columns as a dict of numpy arrays."""
        return {k: getattr(self, k) for k in ("start", "sum", "count", "first", "last")}

    def to_pandas(self):
        """The columns as a pandas DataFrame (pandas is an optional dependency)."""
        import pandas as pd
        return pd.DataFrame(self.to_dict())


cdef intp_t bars_clock_kernel(const int64_t* ts, const float64_t* values, intp_t n,
                              int64_t every, int64_t k0, float64_t* bsum, int64_t* bcount,
                              float64_t* bfirst, float64_t* blast, int* status) noexcept nogil:
    cdef intp_t i, b
    cdef float64_t x
    for i in range(n):
        x = values[i]
        if not (x - x == 0.0):
            status[0] = STATUS_NON_FINITE
            return i
        if i > 0 and ts[i] < ts[i - 1]:
            status[0] = STATUS_TIME_BACKWARDS
            return i
        b = <intp_t> (floor_div(ts[i], every) - k0)
        if bcount[b] == 0:
            bfirst[b] = x
        bsum[b] += x
        bcount[b] += 1
        blast[b] = x
    status[0] = STATUS_OK
    return -1


def bars(ts, values, *, every, max_bars=50_000_000):
    """Aggregate a per-event series into clock bars of length ``every`` (ts units).

    Bar k holds the events with ``k*every <= ts < (k+1)*every`` and is labelled by its left
    edge ``start = k*every``. Bars run from the first event's bar to the last event's bar with
    empty bars included (sum 0, count 0, first/last NaN): dropping them would bias regressions.
    Sums are plain left-to-right float64 sums (exact for integer-valued inputs).

    ``ts`` must be non-decreasing, ``values`` finite; otherwise an OFIError subclass names the
    field and index. Returns :class:`Bars`. Raises OFIError if more than ``max_bars`` bars
    would be created (a unit mistake, e.g. ns timestamps with ``every`` in seconds).
    """
    cdef const int64_t[::1] t = column(ts, np.int64, "ts")
    cdef intp_t n = t.shape[0]
    cdef const float64_t[::1] v = column(values, np.float64, "values", n)
    cdef int64_t ev = int(every)
    if ev <= 0:
        raise OFIError(f"every must be a positive number of ts units, got {every!r}",
                       field="every")
    if n == 0:
        e64 = np.empty(0, dtype=np.int64)
        ef = np.empty(0, dtype=np.float64)
        return Bars(e64, ef, e64.copy(), ef.copy(), ef.copy(), ev)
    cdef int64_t k0 = floor_div(t[0], ev)
    cdef int64_t k1 = floor_div(t[n - 1], ev)
    if k1 < k0:
        # time goes backwards somewhere: let the kernel find the first index
        k1 = k0
    nb = k1 - k0 + 1
    if nb > max_bars:
        raise OFIError(f"{nb} bars of {ev} ts units needed (max_bars={max_bars}); check the "
                       "units of ts and every", field="every")
    start = (np.arange(k0, k1 + 1, dtype=np.int64) * ev)
    bsum = np.zeros(nb, dtype=np.float64)
    bcount = np.zeros(nb, dtype=np.int64)
    bfirst = np.full(nb, np.nan)
    blast = np.full(nb, np.nan)
    cdef float64_t[::1] s = bsum, f = bfirst, l = blast
    cdef int64_t[::1] c = bcount
    cdef int status = STATUS_OK
    cdef intp_t bad
    # Every ts lies in [k0, k1] only if sorted; check sortedness before writing out of range.
    with nogil:
        bad = _first_unsorted(&t[0], n)
        if bad < 0:
            bad = bars_clock_kernel(&t[0], &v[0], n, ev, k0, &s[0], &c[0], &f[0], &l[0],
                                    &status)
        else:
            status = STATUS_TIME_BACKWARDS
    if bad >= 0:
        raise_status(status, "ts" if status == STATUS_TIME_BACKWARDS else "values", bad)
    return Bars(start, bsum, bcount, bfirst, blast, ev)


cdef intp_t _first_unsorted(const int64_t* t, intp_t n) noexcept nogil:
    cdef intp_t i
    for i in range(1, n):
        if t[i] < t[i - 1]:
            return i
    return -1
