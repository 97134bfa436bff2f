"""ofi_fast: order flow imbalance and related microstructure signals, in typed Cython.

The façade: every public name is re-exported here. See README.md for a tour.
"""

import os as _os

# A literal, not importlib.metadata (which costs ~25-55 ms of the import); a test keeps it
# equal to pyproject.toml's version.
__version__ = "0.1.0"

from ofi_fast.errors import (
    CapacityError,
    ChecksumError,
    CrossedBookError,
    NegativeSizeError,
    NonFiniteError,
    OFIError,
    ParseError,
    SequenceGapError,
    TimeOrderError,
)
from ofi_fast._ring import RollingSum
from ofi_fast._ofi import OFI, l1_ofi
from ofi_fast._trades import (
    VPIN, BVCBars, Classifier, TradeFlow, VPINBuckets, bvc, classify_trades, trade_flow, vpin,
)
from ofi_fast._ofi import MultiLevelOFI, integrated_weights, mlofi
from ofi_fast._book import Book, BookOFI
from ofi_fast._impact import (
    Bars, ImpactFit, RollingOLS, bar_mid, bars, event_bars, fit_impact, volume_bars,
)

def get_include() -> str:
    """The folder to add to a downstream Cython build's include path.

    It holds ``ofi_fast/_ofi.pxd`` (and the other .pxd files), so that
    ``from ofi_fast._ofi cimport OFI`` resolves.
    """
    return _os.path.dirname(_os.path.dirname(_os.path.realpath(__file__)))


__all__ = [
    "Bars",
    "BVCBars",
    "Classifier",
    "TradeFlow",
    "VPIN",
    "VPINBuckets",
    "bvc",
    "classify_trades",
    "trade_flow",
    "vpin",
    "Book",
    "BookOFI",
    "ImpactFit",
    "RollingOLS",
    "bar_mid",
    "event_bars",
    "fit_impact",
    "volume_bars",
    "CapacityError",
    "CrossedBookError",
    "NegativeSizeError",
    "NonFiniteError",
    "OFI",
    "OFIError",
    "ParseError",
    "RollingSum",
    "SequenceGapError",
    "TimeOrderError",
    "bars",
    "get_include",
    "l1_ofi",
    "MultiLevelOFI",
    "integrated_weights",
    "mlofi",
    "ChecksumError",
]
