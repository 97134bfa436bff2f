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

import numpy as np

from ofi_fast._types cimport float64_t, int64_t, intp_t

cdef extern from "Python.h":
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

#: flags of the last row of a message (ofi_fast.feeds._l2.FLAG_BATCH_END)
cdef unsigned char BATCH_END = 4


cdef double P10[23]
P10[:] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
          1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


cdef inline int plain_decimal(const char* s, Py_ssize_t n, double* v) noexcept:
    """``[0-9]*(.[0-9]*)?`` with at least one digit, at most 15 significant digits and 22
    decimals -> ``m / 10**k`` (``m < 10**15 < 2**53`` and ``10**k`` exact doubles: one correctly
    rounded IEEE division, so the double nearest the decimal, as ``float()``; Clinger 1990);
    0, or -1 when the text is not of that form (the caller converts it the general way)."""
    cdef unsigned long long m = 0
    cdef int sig = 0, k = 0, nd = 0
    cdef bint dot = False
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = s[i]
        if 48 <= c <= 57:
            nd += 1
            if dot:
                k += 1
            if sig or c != 48:
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

    cdef readonly object side, price, size, flags, batch_end, ts, out
    cdef signed char[::1] _side
    cdef float64_t[::1] _price
    cdef float64_t[::1] _size
    cdef unsigned char[::1] _flags
    cdef unsigned char[::1] _be
    cdef int64_t[::1] _ts
    cdef readonly intp_t n, capacity

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

    def rows(self):
        """Copies of the rows of the last :meth:`fill`: (side, price, size, flags)."""
        cdef intp_t n = self.n
        return (self.side[:n].copy(), self.price[:n].copy(), self.size[:n].copy(),
                self.flags[:n].copy())
