"""Stoikov's (2018) micro-price: a fitted table g(I, S) and its O(1) streaming lookup.

S. Stoikov, "The micro-price: a high-frequency estimator of future prices", Quantitative
Finance 18(12):1959-1966 (2018). ``P_micro = M + g(I, S)``: the mid ``M`` plus the expected
sum of the next ``n_iter`` mid moves given the best-level imbalance ``I = q_b / (q_b + q_a)``
(binned) and the spread ``S`` in ticks, from a Markov chain fitted on the data
(:func:`ofi_fast.microprice.estimate` holds the estimator, its equations and the choices it
makes). This module is the lookup: :meth:`Microprice.update` reads best quotes,
:meth:`Microprice.update_book` a :class:`ofi_fast.Book`, :meth:`Microprice.update_many`
arrays with the GIL released; each is a bin computation and one table read per event.

Not the size-weighted mid. orderflow-metrics and orderflowkit call
``(P_a q_b + P_b q_a) / (q_b + q_a)`` a "micro-price"; that is Stoikov's ``M + g`` only for the
special case g(I, S) = (I - 1/2) S tick, a straight line in I fixed in advance. The fitted g is
estimated from how the book actually moves (bounded by the next moves' size, flat where the
imbalance carries no information, and a martingale by construction), while the weighted mid
jumps by up to a whole spread when a small queue changes and over-reacts to imbalance on
small-tick books (Stoikov 2018, section 2).
"""

cimport cython
from libc.math cimport NAN, floor, isfinite
from libc.stdint cimport INT64_MIN
from libc.stdlib cimport free

import numpy as np

from ofi_fast._types cimport (
    STATUS_NEGATIVE, STATUS_NON_FINITE, STATUS_OK, STATUS_TIME_BACKWARDS, float64_t, int64_t,
    intp_t,
)
from ofi_fast._guard cimport (
    checked_malloc, guard_enter, guard_exit, guard_free, guard_init, guard_wait,
)
from ofi_fast._book cimport Book, book_ask_size, book_ask_tick, book_bid_size, book_bid_tick, book_price
from ofi_fast._arrays import column, output
from ofi_fast.errors import OFIError, raise_status

_FIELDS = ("ts", "bid_sz", "ask_sz")


cdef inline intp_t _bin(float64_t qb, float64_t qa, float64_t tot, intp_t n) noexcept nogil:
    # mirror-symmetric bins (ofi_fast.microprice): same float operations as imbalance_bins
    # (the quotients are >= 0, so the truncating cast is floor)
    cdef intp_t b
    if qb < qa:
        b = <intp_t> (qb / tot * n)
        return b if b < n - 1 else n - 1
    b = <intp_t> (qa / tot * n)
    return n - 1 - (b if b < n - 1 else n - 1)


cdef float64_t mp_adjustment(const MPState* m, float64_t bid_px, float64_t bid_sz,
                             float64_t ask_px, float64_t ask_sz) noexcept nogil:
    cdef float64_t tot = bid_sz + ask_sz
    # spread in ticks, rounded half up (x * (1 / tick) rather than x / tick: a price on the
    # grid gives a value within a few ulps of an integer either way, rounded to the same)
    cdef float64_t x = (ask_px - bid_px) * m.inv_tick
    cdef intp_t s
    # within 1 .. n_spread ticks (NaN prices fail the test)
    if not (x >= 0.5 and x < m.n_spread + 0.5) or not (tot > 0.0 and tot < 1e308):
        return NAN
    s = <intp_t> (x + 0.5) - 1
    if bid_sz == ask_sz:
        return m.center[s]
    return m.table[s * m.n_imb + _bin(bid_sz, ask_sz, tot, m.n_imb)]


cdef inline float64_t _value(const MPState* m, float64_t I, float64_t x) noexcept nogil:
    # g for imbalance I in [0, 1] and spread x ticks (rounded half up)
    cdef intp_t s, b, n = m.n_imb
    if not (x >= 0.5 and x < m.n_spread + 0.5) or not (I >= 0.0 and I <= 1.0):
        return NAN
    s = <intp_t> floor(x + 0.5) - 1
    if I < 0.5:
        b = <intp_t> floor(I * n)
    elif I > 0.5:
        b = <intp_t> floor((1.0 - I) * n)
        b = n - 1 - (b if b < n - 1 else n - 1)
    else:
        return m.center[s]
    return m.table[s * n + (b if b < n - 1 else n - 1)]


cdef int mp_update(MPState* m, int64_t ts, float64_t bid_px, float64_t bid_sz,
                   float64_t ask_px, float64_t ask_sz) noexcept nogil:
    if m.has_last and ts < m.last_ts:
        return STATUS_TIME_BACKWARDS
    if not (bid_sz >= 0.0):
        return (STATUS_NEGATIVE if bid_sz < 0.0 else STATUS_NON_FINITE) | (1 << 4)
    if not (ask_sz >= 0.0):
        return (STATUS_NEGATIVE if ask_sz < 0.0 else STATUS_NON_FINITE) | (2 << 4)
    m.has_last = True
    m.last_ts = ts
    m.mid = 0.5 * (bid_px + ask_px)
    m.adj = mp_adjustment(m, bid_px, bid_sz, ask_px, ask_sz)
    return STATUS_OK


cdef _raise(int status, intp_t index):
    raise_status(status & 15, _FIELDS[status >> 4], index)


@cython.final
cdef class Microprice:
    """Stoikov's micro-price from a fitted table; build one with :meth:`fit`.

    ``Microprice(table, tick_size, *, symmetric=True, info=None)``: ``table[s - 1, b]`` is the
    adjustment g (price units) for spread ``s`` ticks and imbalance bin ``b`` (shape
    ``(max_spread, n_imbalance)``, finite). Streaming: ``update(ts, bid_px, bid_sz, ask_px,
    ask_sz)`` returns the micro-price ``mid + g`` of the event (NaN when a side is empty or the
    spread is outside 1 .. max_spread ticks, where no state was fitted); ``mid``,
    ``adjustment`` and ``value`` read the last event. Sizes must be >= 0 and finite
    (NegativeSizeError / NonFiniteError naming the field; the state is unchanged), ``ts``
    non-decreasing (TimeOrderError). Pickles (table, fit diagnostics and last event).
    """

    def __cinit__(self, table, tick_size, *, symmetric=True, info=None):
        t = np.ascontiguousarray(table, dtype=np.float64)
        if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 2:
            raise OFIError(f"table must have shape (max_spread >= 1, n_imbalance >= 2), got "
                           f"{np.shape(table)}", field="table")
        if not np.all(np.isfinite(t)):
            k = int(np.flatnonzero(~np.isfinite(t.ravel()))[0])
            raise OFIError(f"table[{k // t.shape[1]}, {k % t.shape[1]}] is not finite",
                           field="table", index=k)
        tick = float(tick_size)
        if not (np.isfinite(tick) and tick > 0):
            raise OFIError(f"tick_size must be finite and > 0, got {tick_size!r}",
                           field="tick_size")
        self.st.table = NULL
        self.st.center = NULL
        guard_init(&self.guard)
        cdef intp_t ns = t.shape[0], nb = t.shape[1], i, s
        self.st.table = <float64_t*> checked_malloc(ns * nb, sizeof(float64_t), "table")
        self.st.center = <float64_t*> checked_malloc(ns, sizeof(float64_t), "table")
        self.st.n_imb = nb
        self.st.n_spread = ns
        self.st.tick_size = tick
        self.st.inv_tick = 1.0 / tick
        cdef const float64_t[:, ::1] tv = t
        for s in range(ns):
            for i in range(nb):
                self.st.table[s * nb + i] = tv[s, i]
            if nb % 2 == 0 and symmetric:
                self.st.center[s] = 0.5 * (tv[s, nb // 2 - 1] + tv[s, nb // 2])
            else:
                self.st.center[s] = tv[s, nb // 2]
        self.symmetric = bool(symmetric)
        self.info = dict(info) if info else {}
        self.st.has_last = False
        self.st.last_ts = 0
        self.st.mid = NAN
        self.st.adj = NAN

    def __dealloc__(self):
        free(self.st.table)
        free(self.st.center)
        guard_free(&self.guard)

    @classmethod
    def fit(cls, ts, bid_px, bid_sz, ask_px, ask_sz, tick_size, *, n_imbalance=10,
            max_spread=3, n_iter=6, max_move=1.0, symmetrize=True):
        """Fit the chain on best quotes (one row per quote update; :mod:`ofi_fast.microprice`
        gives the equations and the choices) and return a Microprice. ``ts`` is only checked
        to be non-decreasing (transitions are consecutive rows); a NaN price is an empty side. ``info`` holds the
        diagnostics: ``counts`` (transitions leaving each state, mirrored ones included),
        ``n_transitions``, ``dropped`` (``out_of_range``, ``large_move``), ``G_iter``."""
        from ofi_fast.microprice import estimate
        r = estimate(ts, bid_px, bid_sz, ask_px, ask_sz, tick_size, n_imbalance=n_imbalance,
                     max_spread=max_spread, n_iter=n_iter, max_move=max_move,
                     symmetrize=symmetrize)
        table = r.pop("table")
        return cls(table, tick_size, symmetric=r["symmetric"], info=r)

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        """One quote update; returns the micro-price mid + g(I, S) (NaN outside the states)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        cdef int status = mp_update(&self.st, ts, bid_px, bid_sz, ask_px, ask_sz)
        if status != STATUS_OK:
            _raise(status, 0)
        return self.st.mid + self.st.adj

    def update_book(self, Book book not None, int64_t ts=INT64_MIN):
        """Read the best level of ``book`` (after its last message); returns the micro-price.
        ``ts`` defaults to the last event's."""
        if self.guard.busy:
            guard_wait(&self.guard)
        if book.guard.busy:
            guard_wait(&book.guard)
        cdef int64_t bt = book_bid_tick(&book.st, 0), at = book_ask_tick(&book.st, 0)
        cdef float64_t bp = NAN, ap = NAN
        if book.st.bid.n > 0:
            bp = book_price(&book.st, <float64_t> bt)
        if book.st.ask.n > 0:
            ap = book_price(&book.st, <float64_t> at)
        if ts == INT64_MIN:
            ts = self.st.last_ts
        cdef int status = mp_update(&self.st, ts, bp, book_bid_size(&book.st, 0), ap,
                                    book_ask_size(&book.st, 0))
        if status != STATUS_OK:
            _raise(status, 0)
        return self.st.mid + self.st.adj

    def update_many(self, ts, bid_px, bid_sz, ask_px, ask_sz, *, out=None):
        """Micro-price per event for arrays (GIL released). On a bad event at index i the
        events before it are applied and the error names the field and i."""
        cdef const int64_t[::1] t = column(ts, np.int64, "ts")
        cdef intp_t n = t.shape[0]
        cdef const float64_t[::1] bp = column(bid_px, np.float64, "bid_px", n)
        cdef const float64_t[::1] bs = column(bid_sz, np.float64, "bid_sz", n)
        cdef const float64_t[::1] ap = column(ask_px, np.float64, "ask_px", n)
        cdef const float64_t[::1] as_ = column(ask_sz, np.float64, "ask_sz", n)
        res = output(out, n)
        cdef float64_t[::1] o = res
        cdef intp_t i = 0
        cdef int status = STATUS_OK
        if n == 0:
            return res
        guard_enter(&self.guard)
        try:
            with nogil:
                for i in range(n):
                    status = mp_update(&self.st, t[i], bp[i], bs[i], ap[i], as_[i])
                    if status != STATUS_OK:
                        break
                    o[i] = self.st.mid + self.st.adj
        finally:
            guard_exit(&self.guard)
        if status != STATUS_OK:
            _raise(status, i)
        return res

    def value(self, imbalance, spread):
        """g(I, S) in price units for imbalance I in [0, 1] (bid_sz / (bid_sz + ask_sz)) and
        spread S in ticks (scalars or arrays, broadcast; rounded half up); NaN outside the
        fitted states. The bins are those of ``update`` (which computes I from the sizes, so an
        I exactly on a bin edge may fall on the other side of it by rounding)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        I = np.asarray(imbalance, dtype=np.float64)
        S = np.asarray(spread, dtype=np.float64)
        bad = ~((I >= 0) & (I <= 1)) & ~np.isnan(I)
        if bad.any():
            raise OFIError(f"imbalance must be in [0, 1], got {I[bad].flat[0]!r}",
                           field="imbalance")
        I, S = np.broadcast_arrays(I, S)
        shape = I.shape
        cdef const float64_t[::1] iv = np.ascontiguousarray(I.ravel())
        cdef const float64_t[::1] sv = np.ascontiguousarray(S.ravel())
        cdef intp_t k, n = iv.shape[0]
        res = np.empty(n)
        cdef float64_t[::1] o = res
        with nogil:
            for k in range(n):
                o[k] = _value(&self.st, iv[k], sv[k])
        return res.reshape(shape) if shape else float(res[0])

    @property
    def adjustment(self):
        """g(I, S) of the last event (price units; NaN before the first or outside states)."""
        return self.st.adj

    @property
    def mid(self):
        """Mid of the last event."""
        return self.st.mid

    @property
    def price(self):
        """Micro-price of the last event, mid + g."""
        return self.st.mid + self.st.adj

    @property
    def table(self):
        """A copy of the table, shape (max_spread, n_imbalance), row s - 1 = spread s ticks."""
        cdef intp_t i
        a = np.empty(self.st.n_spread * self.st.n_imb)
        for i in range(a.shape[0]):
            a[i] = self.st.table[i]
        return a.reshape(self.st.n_spread, self.st.n_imb)

    @property
    def tick_size(self):
        return self.st.tick_size

    @property
    def n_imbalance(self):
        return self.st.n_imb

    @property
    def max_spread(self):
        return self.st.n_spread

    def reset(self):
        """Forget the last event (the table stays)."""
        if self.guard.busy:
            guard_wait(&self.guard)
        self.st.has_last = False
        self.st.last_ts = 0
        self.st.mid = NAN
        self.st.adj = NAN

    def __reduce__(self):
        if self.guard.busy:
            guard_wait(&self.guard)
        return (_restore, (self.table, self.st.tick_size, self.symmetric, self.info),
                (bool(self.st.has_last), self.st.last_ts, self.st.mid, self.st.adj))

    def __setstate__(self, state):
        if self.guard.busy:
            guard_wait(&self.guard)
        has, last, mid, adj = state
        self.st.has_last, self.st.last_ts, self.st.mid, self.st.adj = has, last, mid, adj

    def __repr__(self):
        return (f"Microprice(max_spread={self.st.n_spread}, n_imbalance={self.st.n_imb}, "
                f"tick_size={self.st.tick_size:g})")


def _restore(table, tick_size, symmetric, info):
    return Microprice(table, tick_size, symmetric=symmetric, info=info)


@cython.final
cdef class _EmptyMicroCall:
    """An empty cpdef with Microprice.update's signature: the call floor in benchmarks."""

    cpdef float64_t update(self, int64_t ts, float64_t bid_px, float64_t bid_sz,
                           float64_t ask_px, float64_t ask_sz) except? -1.0:
        return 0.0
