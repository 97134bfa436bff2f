# Trade flow imbalance, trade-sign classification and VPIN. C-level API.
#
#   from ofi_fast._trades cimport TradeFlow, TradeFlowState, tick_sign, classify_one
#
# Status returned by tradeflow_update / TradeFlow.push: (status & 15) is a Status of
# _types.pxd, (status >> 4) the field at fault: 0 ts, 1 price, 2 size, 3 side, 4 bid_px, 5 ask_px.

from libc.stdint cimport int8_t
from ofi_fast._guard cimport Guard
from ofi_fast._ring cimport Ring
from ofi_fast._types cimport float64_t, int64_t, intp_t

# Classification methods (the `method=` strings map to these).
cdef enum Method:
    METHOD_NONE = 0       # no classification: side-0 trades stay unknown
    METHOD_TICK = 1       # tick rule with zero-tick carry-forward (Lee & Ready 1991)
    METHOD_QUOTE = 2      # quote rule: against the prevailing mid; 0 at the mid
    METHOD_LEE_READY = 3  # quote rule; tick rule at the mid (Lee & Ready 1991)
    METHOD_EMO = 4        # +1 at the ask, -1 at the bid, tick rule otherwise (EMO 2000)

cdef struct TickState:
    float64_t last_px    # previous trade's price (meaningful only when has_last)
    int8_t last_sign     # sign of the last non-zero price change; 0 before the first one
    bint has_last        # a trade has been seen since reset

cdef struct ClassifierState:
    TickState tick       # tick-rule state, fed by every trade (classified or not)
    int method           # a Method
    int64_t n_trades     # trades classified since reset
    int64_t n_no_quote   # trades a quote-based rule sent to the tick rule: no quote (NaN),
                         # locked (bid == ask) or crossed (bid > ask) quote
    int64_t n_crossed    # of those, trades whose prevailing quote was crossed (bid > ask)
    int64_t n_unclassified  # trades that came out 0 (no prior price change / quote-rule mid)

# Tick rule: +1 uptick, -1 downtick, the last non-zero change's sign on a zero tick,
# 0 before the first non-zero change. Updates the tick state with the price.
# Branch-free (compare results and conditional moves): price moves are unpredictable.
cdef inline int8_t tick_sign(TickState* t, float64_t price) noexcept nogil:
    cdef int d = 0
    if t.has_last:
        d = (price > t.last_px) - (price < t.last_px)
    t.last_sign = <int8_t> d if d != 0 else t.last_sign
    t.last_px = price
    t.has_last = True
    return t.last_sign

# One trade at `price` with the prevailing quote (bid, ask) (NaN when unknown) under c.method
# (not METHOD_NONE). Prices are compared exactly: pass integer ticks or exact multiples of the
# tick. Branch-free apart from the method (constant in a stream): where a trade falls against
# the quote is unpredictable, and a mispredicted branch costs more than the whole rule.
cdef inline int8_t classify_one(ClassifierState* c, float64_t price, float64_t bid,
                                float64_t ask) noexcept nogil:
    cdef int sg = tick_sign(&c.tick, price)
    cdef int r = sg, q, valid
    cdef float64_t twice, mid2
    if c.method != METHOD_TICK:
        valid = bid < ask          # a usable quote: False for NaN, locked, crossed
        if c.method == METHOD_EMO:
            q = (price == ask) - (price == bid)
            q = q if q != 0 else sg
        else:
            twice = price + price
            mid2 = bid + ask
            q = (twice > mid2) - (twice < mid2)
            if c.method == METHOD_LEE_READY:
                q = q if q != 0 else sg
        r = q if valid else sg
        c.n_no_quote += 1 - valid
        c.n_crossed += bid > ask
    c.n_trades += 1
    c.n_unclassified += r == 0
    return <int8_t> r

cdef void classifier_reset(ClassifierState* c) noexcept nogil

# Quotes waiting to take effect under a quote delay (Lee-Ready's lag): FIFO ring, grown by
# doubling when full (the only allocation, amortised; none at all with lag 0).
cdef struct QuoteQueue:
    int64_t* ts          # quote timestamps, non-decreasing in push order
    float64_t* bid       # best bid of each pending quote (NaN: none)
    float64_t* ask       # best ask of each pending quote (NaN: none)
    intp_t capacity      # slots allocated
    intp_t head          # slot of the oldest pending quote
    intp_t count         # pending quotes, 0 <= count <= capacity

# Streaming classifier: a ClassifierState, the prevailing quote and the pending quotes.
cdef struct StreamClassifierState:
    ClassifierState cls
    int64_t quote_lag    # a trade at t uses the last quote with quote ts <= t - quote_lag (>= 0)
    float64_t bid_px     # prevailing bid (NaN before the first quote takes effect)
    float64_t ask_px     # prevailing ask
    QuoteQueue pending   # quotes not yet in effect (only used when quote_lag > 0)
    bint has_last        # a trade has been classified since reset
    int64_t last_ts      # the last trade's timestamp
    bint has_quote_ts    # a quote has been pushed since reset
    int64_t last_quote_ts  # the last quote's timestamp

# Push a quote: STATUS_OK, STATUS_TIME_BACKWARDS (quote ts before the previous quote's) or
# STATUS_NO_MEMORY, state unchanged on failure.
cdef int stream_classifier_quote(StreamClassifierState* st, int64_t ts, float64_t bid_px,
                                 float64_t ask_px) noexcept nogil
# Classify a trade: writes the sign to *sign. STATUS_TIME_BACKWARDS (field 0 ts) or
# STATUS_NON_FINITE | 1 << 4 (price); state unchanged on failure.
cdef int stream_classifier_trade(StreamClassifierState* st, int64_t ts, float64_t price,
                                 int8_t* sign) noexcept nogil


# Ring of the trades inside a TradeFlow window (count, time or volume window): the shared Ring
# of _ring.pxd with width 1 and a tag column. ts: trade timestamps (non-decreasing), val[j]: the
# trade's size (>= 0; a volume window trims the oldest one's), tag[j]: its final side (+1, -1,
# 0) after classification; head / size / capacity as in Ring (size = trades held).
ctypedef Ring TradeRing

cdef struct TradeFlowState:
    ClassifierState cls  # classifier for side-0 trades (method METHOD_NONE: leave unknown)
    float64_t bid_px     # prevailing quote from update_quote (NaN before the first one)
    float64_t ask_px     # prevailing ask (NaN before the first one)
    int64_t window       # count window (trades); 0 = none
    int64_t window_time  # time window (ts units): trades with ts in (t - window_time, t]; 0 = none
    float64_t window_volume  # volume window: the latest trades holding this volume, the oldest
                             # trimmed (ring size = its counted part); 0 = none
    bint grow            # time window: double the ring instead of failing when it is full
    TradeRing ring       # the trades in the window (unused without a window)
    float64_t vol[3]     # Neumaier sums of size in the window by side index (0 sell, 1 unk, 2 buy)
    float64_t comp[3]    # their compensation terms: exact sum = vol[k] + comp[k]
    int64_t n[3]         # trades in the window by side index
    int64_t n_events     # trades accepted since reset (whatever the window)
    int64_t n_classified # side-0 trades whose side was inferred by the classifier
    bint has_last        # a trade has been accepted since reset
    int64_t last_ts      # the last trade's timestamp

cdef int tradeflow_init(TradeFlowState* st, int method, int64_t window, int64_t window_time,
                        intp_t capacity, bint grow) noexcept nogil
cdef void tradeflow_free(TradeFlowState* st) noexcept nogil
cdef void tradeflow_reset(TradeFlowState* st) noexcept nogil
# One trade: validates, classifies side 0 if asked, updates the window; writes the signed
# volume side * size to *signed. On failure the state is unchanged (status layout above).
cdef int tradeflow_update(TradeFlowState* st, int64_t ts, float64_t price, float64_t size,
                          int side, float64_t bid_px, float64_t ask_px,
                          float64_t* signed) noexcept nogil


cdef class TradeFlow:
    cdef TradeFlowState st
    cdef Guard guard            # serialises calls from several threads (see _guard.pxd)
    cdef readonly object window
    cdef readonly object window_time
    cdef readonly object classify
    cdef readonly object window_volume
    cdef int push(self, int64_t ts, float64_t price, float64_t size, int side,
                  float64_t* signed) noexcept nogil
    cpdef float64_t update(self, int64_t ts, float64_t price, float64_t size,
                           int side=*) except? -1.0


cdef class Classifier:
    cdef StreamClassifierState st
    cdef Guard guard            # serialises calls from several threads (see _guard.pxd)
    cdef readonly object method
    cdef int push(self, int64_t ts, float64_t price, int8_t* sign) noexcept nogil
    cpdef int update(self, int64_t ts, float64_t price) except? -2


cdef class _EmptyTradeCall:
    cpdef float64_t update(self, int64_t ts, float64_t price, float64_t size,
                           int side=*) except? -1.0


# VPIN (Easley, Lopez de Prado & O'Hara 2012): equal-volume buckets, trades split across them.
cdef struct VPINState:
    float64_t bucket_volume  # V > 0, volume per bucket
    intp_t n_buckets         # n >= 1, buckets in the VPIN average
    float64_t fill           # volume in the open bucket, 0 <= fill < V
    float64_t buy            # buy volume in the open bucket (fill - buy is sell)
    float64_t* imb           # ring of |V_S - V_B| of the last n closed buckets
    intp_t head              # next slot of imb to write
    intp_t n_closed          # buckets closed since reset
    float64_t sum            # Neumaier sum of imb over the ring ...
    float64_t comp           # ... and its compensation term
    bint has_last            # a trade has been seen since reset
    int64_t last_ts          # the last trade's timestamp

# Where vpin_update writes the buckets a trade closes (NULL: write nothing).
cdef struct VPINOut:
    int64_t* ts              # timestamp of the trade that closed each bucket
    float64_t* vpin          # VPIN after each close (NaN before n_buckets closes)
    float64_t* buy           # bucket buy volume
    float64_t* sell          # bucket sell volume
    intp_t n                 # rows written
    intp_t capacity          # rows available

cdef int vpin_init(VPINState* st, float64_t bucket_volume, intp_t n_buckets) noexcept nogil
cdef void vpin_free(VPINState* st) noexcept nogil
cdef void vpin_reset(VPINState* st) noexcept nogil
cdef float64_t vpin_value(const VPINState* st) noexcept nogil
# One trade of `size` with buy share `buy_fraction` in [0, 1]. Status layout: field 0 ts,
# 1 size, 2 buy fraction / side. STATUS_CAPACITY when `out` cannot hold the buckets it closes.
cdef int vpin_update(VPINState* st, int64_t ts, float64_t size, float64_t buy_fraction,
                     VPINOut* out) noexcept nogil

cdef class VPIN:
    cdef VPINState st
    cdef Guard guard            # serialises calls from several threads (see _guard.pxd)
    cdef int push(self, int64_t ts, float64_t size, float64_t buy_fraction) noexcept nogil
    cpdef int64_t update(self, int64_t ts, float64_t size, int side=*) except -1
