"""Binance diff-depth levels -> reusable typed buffers (the live client's per-message path).

:class:`DiffBuffers` takes one diff's decoded ``b`` and ``a`` lists (``[[price_str,
qty_str], ...]``, as ``json`` / ``orjson`` give them) and writes its rows into preallocated
numpy columns: the bids, then the asks (side +1 / -1), the last row flagged as the end of
the message (``flags`` FLAG_BATCH_END, ``batch_end`` True), and the same time in ``ts`` for
every row. No Python object is created per level and no array per message; the columns are
reused (and grown, never shrunk) from message to message, so a caller that keeps rows must
copy them (:meth:`DiffBuffers.rows`).

Values: a plain decimal of at most 15 significant digits and 22 decimals (every Binance price
and quantity) is ``m / 10**k`` of two exact doubles, one correctly rounded division (Clinger
1990); any other text goes to ``PyOS_string_to_double``, the correctly rounded conversion
Python's ``float(str)`` itself calls. Either way a price or size is bit for bit what
:mod:`ofi_fast.feeds.binance` (``float()``) gives for the same text. Only the plain shape is
taken here: a level that is an exact ``list`` of two exact ``str``, each the whole text of a
float, price finite and > 0, size finite and >= 0. Anything else (a tuple, a number instead
of a string, whitespace or ``_`` that ``float()`` would accept, ``nan``, a negative size,
non-ASCII digits) makes :meth:`DiffBuffers.fill` return -1 and leave the rows undefined:
the caller then builds the rows the file reader's way, which either gives the same values or
raises the error the file reader raises. So the fast path changes no value and no error.

The GIL is held throughout (the input is Python lists); the per-level work is C calls on
borrowed references: no allocation, no exception raised (a conversion error is cleared and
reported as -1).
"""

from cpython.object cimport PyObject
from libc.stdint cimport INT64_MIN

import numpy as np

from ofi_fast._types cimport float64_t, int64_t, intp_t

# DiffBuffers' attributes and the Cursor struct are declared in _binance_decode.pxd

cdef extern from "Python.h":
    int PyBytes_CheckExact(PyObject* o)
    char* PyBytes_AS_STRING(PyObject* o)
    Py_ssize_t PyBytes_GET_SIZE(PyObject* o)
    int PyList_CheckExact(PyObject* o)
    int PyUnicode_CheckExact(PyObject* o)
    Py_ssize_t PyList_GET_SIZE(PyObject* o)
    PyObject* PyList_GET_ITEM(PyObject* o, Py_ssize_t i)
    const char* PyUnicode_AsUTF8AndSize(PyObject* o, Py_ssize_t* size)
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception)
    PyObject* PyErr_Occurred()
    void PyErr_Clear()

cdef extern from "math.h" nogil:
    const double INFINITY
    const double NAN

from libc.string cimport memcmp

from ofi_fast._book cimport BookOFI, BookState, book_ask_tick, book_bid_tick, book_price, raise_bookofi
from ofi_fast._guard cimport guard_wait
from ofi_fast._types cimport STATUS_OK

#: DiffBuffers.step's results
STEP_NONE = -1
STEP_SCANNED = 0
STEP_APPLIED = 1


cdef inline bint in_seq(int64_t U, int64_t u, int64_t pu, bint has_pu, int64_t prev_u,
                        bint futures) noexcept:
    # BinanceSync.accept's rule in state "sync" for a diff it applies (a duplicate, a futures
    # diff without pu, a gap: False, and the state machine decides)
    if u <= prev_u:
        return False
    if futures:
        return has_pu and pu == prev_u
    return U == prev_u + 1


def in_sequence(int64_t U, int64_t u, pu, int64_t prev_u, bint futures):
    """True when a diff (``U``, ``u``, ``pu`` or None) is applied in sequence after
    ``prev_u`` (what :meth:`DiffBuffers.step` checks; ``BinanceSync.accept`` in state "sync"
    returns True for exactly these, tested)."""
    return in_seq(U, u, 0 if pu is None else pu, pu is not None, prev_u, futures)

#: flags of the last row of a message (ofi_fast.feeds._l2.FLAG_BATCH_END)
cdef unsigned char BATCH_END = 4
cdef int64_t NO_TIME = INT64_MIN          # ofi_fast.feeds._common.NO_TIME
cdef int64_t MAX_MS = 9223372036854          # E (ms) * 1e6 must fit in int64

# the members of a depthUpdate the scanner knows (bit per key: each at most once)
cdef enum:
    K_E_NAME = 1     # "e"
    K_E = 2          # "E"
    K_T = 4          # "T"
    K_S = 8          # "s"
    K_U = 16         # "U"
    K_UL = 32        # "u"
    K_PU = 64        # "pu"
    K_B = 128        # "b"
    K_A = 256        # "a"


cdef inline bint lit(Cursor* c, const char* text, Py_ssize_t n) noexcept:
    """The bytes ``text[:n]`` come next: consume them."""
    cdef Py_ssize_t i
    if c.end - c.p < n:
        return False
    for i in range(n):
        if c.p[i] != text[i]:
            return False
    c.p += n
    return True


cdef inline bint json_int(Cursor* c, int64_t* v) noexcept:
    """A JSON integer ``-?(0|[1-9][0-9]*)`` of at most 18 digits (fits in int64)."""
    cdef bint neg = False
    cdef int nd = 0
    cdef int64_t x = 0
    if c.p < c.end and c.p[0] == 45:      # '-'
        neg = True
        c.p += 1
    if c.p >= c.end or not (48 <= c.p[0] <= 57):
        return False
    if c.p[0] == 48:                      # a leading 0 is the whole number
        c.p += 1
        if c.p < c.end and 48 <= c.p[0] <= 57:
            return False
    else:
        while c.p < c.end and 48 <= c.p[0] <= 57:
            nd += 1
            if nd > 18:
                return False
            x = x * 10 + (c.p[0] - 48)
            c.p += 1
    v[0] = -x if neg else x
    return True


cdef inline bint plain_str(Cursor* c, const char** s, Py_ssize_t* n) noexcept:
    """A JSON string of printable ASCII without escapes: its bytes (without the quotes)."""
    if c.p >= c.end or c.p[0] != 34:
        return False
    c.p += 1
    s[0] = c.p
    while c.p < c.end and c.p[0] != 34:
        if c.p[0] < 32 or c.p[0] > 126 or c.p[0] == 92:   # control, non-ASCII, backslash
            return False
        c.p += 1
    if c.p >= c.end:
        return False
    n[0] = c.p - s[0]
    c.p += 1
    return True


cdef double P10[23]
P10[:] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
          1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


cdef inline int plain_decimal(const char* s, Py_ssize_t n, double* v) noexcept:
    """``[0-9]*(.[0-9]*)?`` with at least one digit, at most 15 significant digits (trailing
    zeros of the decimals not counted: "10000000.00000000" is 1e7) and 22 decimals ->
    ``m / 10**k`` (``m < 10**15 < 2**53`` and ``10**k`` exact doubles: one correctly rounded
    IEEE division, so the double nearest the decimal, as ``float()``; Clinger 1990); 0, or -1
    when the text is not of that form (the caller converts it the general way)."""
    cdef unsigned long long m = 0
    cdef int sig = 0, k = 0, nd = 0, zeros = 0
    cdef bint dot = False
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = s[i]
        if 48 <= c <= 57:
            nd += 1
            if dot:
                if c == 48:
                    zeros += 1             # pending: counts only if a digit follows
                    continue
                k += zeros + 1
                if sig:
                    sig += zeros
                    if sig >= 15:
                        return -1
                    m *= <unsigned long long>P10[zeros]   # zeros <= 14 here: exact
                zeros = 0
                sig += 1
                m = m * 10 + <unsigned long long>(c - 48)
            elif sig or c != 48:
                sig += 1
                if sig > 15:
                    return -1
                m = m * 10 + <unsigned long long>(c - 48)
        elif c == 46 and not dot:
            dot = True
        else:
            return -1
    if nd == 0 or k > 22:
        return -1
    v[0] = <double>m / P10[k] if k else <double>m
    return 0


cdef inline int to_double(PyObject* o, double* v) noexcept:
    """An exact ``str`` that is the whole text of a float -> ``*v``; 0, or -1 (no error set)."""
    cdef Py_ssize_t n
    cdef const char* s
    cdef char* end
    if not PyUnicode_CheckExact(o):
        return -1
    s = PyUnicode_AsUTF8AndSize(o, &n)
    if s == NULL or n == 0:
        PyErr_Clear()
        return -1
    if plain_decimal(s, n, v) == 0:
        return 0
    v[0] = PyOS_string_to_double(s, &end, NULL)
    if PyErr_Occurred() != NULL:
        PyErr_Clear()
        return -1
    if end != s + n:
        return -1
    return 0


cdef inline int level(PyObject* lv, double* p, double* q) noexcept:
    """One level ``[price_str, qty_str]`` -> price > 0 and size >= 0, finite; 0 or -1."""
    if not PyList_CheckExact(lv) or PyList_GET_SIZE(lv) != 2:
        return -1
    if to_double(PyList_GET_ITEM(lv, 0), p) < 0 or not (0.0 < p[0] < INFINITY):
        return -1
    if to_double(PyList_GET_ITEM(lv, 1), q) < 0 or not (0.0 <= q[0] < INFINITY):
        return -1
    return 0


cdef class DiffBuffers:
    """Reusable columns for one diff's rows (see the module docstring).

    ``DiffBuffers(capacity=256)``: rows held before the first growth. After a successful
    :meth:`fill` the first ``n`` rows of ``side`` (int8), ``price``, ``size`` (float64),
    ``flags`` (uint8), ``batch_end`` (bool) and ``ts`` (int64) hold the message; ``out``
    (float64, same capacity) is scratch space for the per-row OFI a consumer computes.
    """

    def __cinit__(self, intp_t capacity=256):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.n = 0
        self._alloc(capacity)

    cdef int _alloc(self, intp_t cap) except -1:
        self.side = np.zeros(cap, np.int8)
        self.price = np.zeros(cap, np.float64)
        self.size = np.zeros(cap, np.float64)
        self.flags = np.zeros(cap, np.uint8)
        self.batch_end = np.zeros(cap, np.bool_)
        self.ts = np.zeros(cap, np.int64)
        self.out = np.zeros(cap, np.float64)
        self._side = self.side
        self._price = self.price
        self._size = self.size
        self._flags = self.flags
        self._be = self.batch_end.view(np.uint8)
        self._ts = self.ts
        self._out = self.out
        self.capacity = cap
        return 0

    def fill(self, bids, asks, int64_t ts):
        """Write the rows of one diff (``bids``, ``asks``: its ``b`` and ``a``), every row at
        time ``ts``; returns the number of rows n (0 for a diff without levels), or -1 when a
        level is not of the plain shape (see the module docstring: nothing raised, the caller
        takes the general path)."""
        cdef PyObject* b = <PyObject*>bids
        cdef PyObject* a = <PyObject*>asks
        cdef PyObject* lv
        cdef Py_ssize_t nb, na, i, j, n
        cdef double p, q
        self.n = 0
        if not PyList_CheckExact(b) or not PyList_CheckExact(a):
            return -1
        nb = PyList_GET_SIZE(b)
        na = PyList_GET_SIZE(a)
        n = nb + na
        if n > self.capacity:
            self._alloc(max(n, 2 * self.capacity))
        for j in range(nb):
            lv = PyList_GET_ITEM(b, j)
            if level(lv, &p, &q) < 0:
                return -1
            self._side[j] = 1
            self._price[j] = p
            self._size[j] = q
        for j in range(na):
            lv = PyList_GET_ITEM(a, j)
            if level(lv, &p, &q) < 0:
                return -1
            self._side[nb + j] = -1
            self._price[nb + j] = p
            self._size[nb + j] = q
        for j in range(n):
            self._flags[j] = 0
            self._be[j] = 0
            self._ts[j] = ts
        if n:
            self._flags[n - 1] = BATCH_END
            self._be[n - 1] = 1
        self.n = n
        return n

    cdef int _grow(self, intp_t need) except -1:
        """Room for ``need`` rows, keeping the rows already written."""
        cdef intp_t cap = max(need, 2 * self.capacity)
        old = (self.side, self.price, self.size)
        self._alloc(cap)
        self.side[:old[0].shape[0]] = old[0]
        self.price[:old[1].shape[0]] = old[1]
        self.size[:old[2].shape[0]] = old[2]
        return 0

    cdef int _levels(self, Cursor* c, signed char sd, intp_t j) except -2:
        """A JSON array of ``["price","size"]`` levels at the cursor, written from row ``j``;
        the next row, or -1 when it is not of the plain shape."""
        cdef const char* t
        cdef Py_ssize_t n
        cdef double p, q
        if not lit(c, "[", 1):
            return -1
        if lit(c, "]", 1):
            return j
        while True:
            if not lit(c, "[", 1) or not plain_str(c, &t, &n) or plain_decimal(t, n, &p) < 0:
                return -1
            if not lit(c, ",", 1) or not plain_str(c, &t, &n) or plain_decimal(t, n, &q) < 0:
                return -1
            if not lit(c, "]", 1) or not (0.0 < p < INFINITY) or not (0.0 <= q < INFINITY):
                return -1
            if j >= self.capacity:
                self._grow(j + 1)
            self._side[j] = sd
            self._price[j] = p
            self._size[j] = q
            j += 1
            if lit(c, "]", 1):
                return j
            if not lit(c, ",", 1):
                return -1

    cdef int _scan(self, object raw, int64_t ts_local, bint exchange_clock) except -2:
        """:meth:`scan` without the dict: 1 with the rows in the buffers and the fields in
        ``U``, ``u``, ``pu``, ``E`` / ``has_E``, ``has_pu``, ``has_s``, ``symbol_ok`` (the
        frame's ``s`` is :attr:`symbol`), or 0 when the frame is not a plain diff."""
        cdef PyObject* o = <PyObject*>raw
        cdef Cursor c
        cdef bint wrapped
        cdef int seen = 0, key
        cdef int64_t v, E = 0, T = 0, U = 0, u = 0, pu = 0, ts
        cdef const char* t
        cdef const char* sym = NULL
        cdef Py_ssize_t n, nsym = 0
        cdef intp_t j = 0, r
        self.n = 0
        if not PyBytes_CheckExact(o):
            return 0
        c.p = PyBytes_AS_STRING(o)
        c.end = c.p + PyBytes_GET_SIZE(o)
        wrapped = lit(&c, '{"stream":', 10)
        if wrapped:
            if not plain_str(&c, &t, &n) or not lit(&c, ',"data":', 8):
                return 0
        if not lit(&c, "{", 1):
            return 0
        while True:
            if not plain_str(&c, &t, &n) or not lit(&c, ":", 1):
                return 0
            if n == 1:
                key = (K_E_NAME if t[0] == 101 else K_E if t[0] == 69 else K_T if t[0] == 84
                       else K_S if t[0] == 115 else K_U if t[0] == 85 else K_UL if t[0] == 117
                       else K_B if t[0] == 98 else K_A if t[0] == 97 else 0)
            elif n == 2 and t[0] == 112 and t[1] == 117:
                key = K_PU
            else:
                key = 0
            if key == 0 or seen & key:
                return 0
            seen |= key
            if key == K_E_NAME:
                if not lit(&c, '"depthUpdate"', 13):
                    return 0
            elif key == K_S:
                if not plain_str(&c, &sym, &nsym):
                    return 0
            elif key == K_B:
                if seen & K_A:
                    return 0
                r = self._levels(&c, 1, 0)
                if r < 0:
                    return 0
                j = r
            elif key == K_A:
                r = self._levels(&c, -1, j)
                if r < 0:
                    return 0
                j = r
            else:
                if not json_int(&c, &v):
                    return 0
                if key == K_E:
                    E = v
                elif key == K_T:
                    T = v
                elif key == K_U:
                    U = v
                elif key == K_UL:
                    u = v
                else:
                    pu = v
            if lit(&c, "}", 1):
                break
            if not lit(&c, ",", 1):
                return 0
        if wrapped and not lit(&c, "}", 1):
            return 0
        if c.p != c.end:
            return 0
        if (seen & (K_E_NAME | K_U | K_UL | K_B | K_A)) != (K_E_NAME | K_U | K_UL | K_B | K_A):
            return 0
        if seen & K_E and not (0 <= E <= MAX_MS):
            return 0
        if exchange_clock:
            ts = E * 1000000 if seen & K_E else NO_TIME
        else:
            ts = ts_local
        for r in range(j):
            self._flags[r] = 0
            self._be[r] = 0
            self._ts[r] = ts
        if j:
            self._flags[j - 1] = BATCH_END
            self._be[j - 1] = 1
        self.n = j
        self.U, self.u, self.pu, self.E, self.T = U, u, pu, E, T
        self.has_T = (seen & K_T) != 0
        self.has_E = (seen & K_E) != 0
        self.has_pu = (seen & K_PU) != 0
        self.has_s = (seen & K_S) != 0
        self._sp, self._sn = sym, nsym
        self.symbol_ok = False
        if self.has_s and self.symbol is not None and nsym == len(self.symbol):
            self.symbol_ok = memcmp(sym, <const char*>self.symbol, nsym) == 0
        return 1

    def scan(self, raw, int64_t ts_local, bint exchange_clock):
        """Decode one websocket frame (``bytes``) that is a diff-depth message of the plain
        shape, combined-stream wrapped (``{"stream":"...","data":{...}}``) or bare: its
        fields ``e``, ``E``, ``T``, ``s``, ``U``, ``u``, ``pu`` as a dict (the ones present),
        its rows written as :meth:`fill` does, every row at ``E`` ms in ns
        (``exchange_clock``; NO_TIME without ``E``) or at ``ts_local``. None when the frame
        is anything else: another stream, whitespace, escapes, a key it does not know, a
        missing ``U`` / ``u`` / ``b`` / ``a``, ``a`` before ``b``, a number that is not a
        plain integer / decimal string, a bad price or size, trailing bytes. The caller
        then decodes the frame in full (``json``), which counts what is malformed: the
        scanner accepts only what that decoding accepts, with the same values."""
        if self._scan(raw, ts_local, exchange_clock) == 0:
            return None
        d = {"e": "depthUpdate", "U": self.U, "u": self.u}
        if self.has_E:
            d["E"] = self.E
        if self.has_T:
            d["T"] = self.T
        if self.has_s:
            d["s"] = self._sp[:self._sn].decode("ascii")
        if self.has_pu:
            d["pu"] = self.pu
        return d

    def expect(self, symbol):
        """The symbol (``str``, e.g. "BTCUSDT") whose diffs :meth:`step` takes; None: none."""
        self.symbol = None if symbol is None else str(symbol).encode("ascii")

    cdef int _apply_rows(self, BookOFI ofi) except -1:
        """rows [0, n) -> ``ofi`` as ``ofi.update_many(ts[:n], side[:n], price[:n], size[:n],
        batch_end=batch_end[:n], out=out[:n])`` does (the same loop, ``BookOFI.rows``; the same
        error, raised after the rows before the bad one are applied); ``e`` = the last row's
        e_1 (0.0 when n == 0), ``mid`` = the book's mid after (as ``ofi.book.mid``)."""
        cdef intp_t n = self.n, at = 0
        cdef int status
        cdef BookState* b = &ofi._book.st
        if ofi._book.guard.busy:
            guard_wait(&ofi._book.guard)    # the GIL is held throughout: no other thread
        if n == 0:                          # can enter a GIL-released section meanwhile
            self.e = 0.0
        else:
            status = ofi.rows(n, &self._ts[0], &self._side[0], &self._price[0], &self._size[0],
                              &self._be[0], &self._out[0], NULL, &at)
            if status != STATUS_OK:
                raise_bookofi(status, at)
            self.e = self._out[n - 1]
        if b.bid.n == 0 or b.ask.n == 0:
            self.mid = NAN
        else:
            self.mid = book_price(b, (<float64_t>book_bid_tick(b, 0)
                                      + <float64_t>book_ask_tick(b, 0)) * 0.5)
        return 0

    def apply(self, BookOFI ofi):
        """Apply the rows of the last :meth:`fill` / :meth:`scan` to ``ofi`` (see ``_apply_rows``:
        update_many's loop and errors without its argument handling); returns the last row's
        e_1 (also in ``e``; the book's mid after in ``mid``)."""
        self._apply_rows(ofi)
        return self.e

    def step(self, raw, int64_t ts_local, bint exchange_clock, int64_t prev_u, bint futures,
             BookOFI ofi, int64_t last_ts, int64_t every, int64_t bar):
        """The live client's common case in one call: a plain diff of :attr:`symbol`, in
        sequence after ``prev_u`` (:func:`in_sequence`: the rule ``BinanceSync.accept``
        applies in state "sync"), with levels and a time, whose bar (``max(time, last_ts) //
        every``) is ``bar``: its rows are applied to ``ofi`` (:meth:`apply`) and
        STEP_APPLIED (1) returned, with ``t`` the time used, ``e`` and ``mid``. Otherwise
        nothing is applied: STEP_SCANNED (0), the frame is a plain diff of the symbol (rows
        and fields ready for the state machine: a gap, a duplicate, no levels, no time, another
        bar), or STEP_NONE (-1), it is not (decode it in full)."""
        cdef int64_t t, k
        if self._scan(raw, ts_local, exchange_clock) == 0 or not self.symbol_ok:
            return STEP_NONE
        if self.n == 0 or not in_seq(self.U, self.u, self.pu, self.has_pu, prev_u, futures):
            return STEP_SCANNED
        t = self._ts[0]
        if t == NO_TIME:
            return STEP_SCANNED
        if t < last_ts:
            t = last_ts
        if t < 0 or every <= 0:
            return STEP_SCANNED
        k = t // every                    # t >= 0, every > 0: C's division is Python's //
        if k != bar:
            return STEP_SCANNED
        self._apply_rows(ofi)
        self.t = t
        return STEP_APPLIED

    def rows(self):
        """Copies of the rows of the last :meth:`fill`: (side, price, size, flags)."""
        cdef intp_t n = self.n
        return (self.side[:n].copy(), self.price[:n].copy(), self.size[:n].copy(),
                self.flags[:n].copy())
