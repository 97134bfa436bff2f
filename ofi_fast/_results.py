"""Result types of the compiled trade kernels, defined in Python so that they are module-level
classes: they pickle (``multiprocessing`` can return them) and type checkers see their fields.
``ofi_fast._trades`` imports them from here."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # numpy.typing costs import time; the annotations are strings here
    import numpy as np
    from numpy.typing import NDArray


class BVCBars(NamedTuple):
    """Clock bars with their BVC split (arrays of one length, one row per bar).

    ``start`` bar left edge (ts units); ``volume`` V_i; ``last`` last trade price (carried
    forward through empty bars); ``dp`` P_i - P_{i-1} (NaN for the first bar); ``sigma`` the
    std of dP used (NaN where undefined); ``buy_fraction`` Z(dP_i / sigma), 0.5 where
    undefined; ``buy_volume`` V_i * buy_fraction; ``sell_volume`` V_i - buy_volume."""

    start: NDArray[np.int64]
    volume: NDArray[np.float64]
    last: NDArray[np.float64]
    dp: NDArray[np.float64]
    sigma: NDArray[np.float64]
    buy_fraction: NDArray[np.float64]
    buy_volume: NDArray[np.float64]
    sell_volume: NDArray[np.float64]


class VPINBuckets(NamedTuple):
    """Buckets closed, one row each: ``ts`` the timestamp of the trade that filled the bucket,
    ``vpin`` VPIN at that close (NaN until n_buckets buckets are complete), ``buy``/``sell`` the
    bucket's buy and sell volume (buy + sell = bucket_volume)."""

    ts: NDArray[np.int64]
    vpin: NDArray[np.float64]
    buy: NDArray[np.float64]
    sell: NDArray[np.float64]
