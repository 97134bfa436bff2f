"""Estimation of Stoikov's (2018) micro-price: the Markov chain on (imbalance, spread) states.

S. Stoikov, "The micro-price: a high-frequency estimator of future prices", Quantitative
Finance 18(12):1959-1966 (2018). The micro-price is the limit of the expected mid after the
next mid-price moves, ``P_micro = M + g(I, S)``, with ``I = q_b / (q_b + q_a)`` the best-level
imbalance in [0, 1] and ``S`` the spread in ticks. Discretised, with ``x = (I, S)`` a state:

- ``Q[x, y]``: probability that the next observation is in state ``y`` with the mid unchanged;
- ``R[x, k]``: probability that the next observation moves the mid by ``K[k]`` (``K`` the mid
  changes kept, in price units, here the half-tick multiples ``+-1/2 .. +-max_move`` ticks);
- ``T[x, y]``: probability that the mid moves and the next state is ``y``;
- ``G1 = (1 - Q)^-1 R K`` (the expected first mid move), ``B = (1 - Q)^-1 T``,
  ``G^{i+1} = B G^i``, and the adjustment ``g(x) = G^1 + ... + G^n`` after ``n = n_iter``
  moves (the paper's estimator: ``n_iter`` = 6 in its example; the sum converges because the
  symmetrised ``G^1`` is orthogonal to B's stationary distribution).

Choices the paper leaves open, made here (each a parameter):

- **transitions**: consecutive input rows (each quote update). Rows where nothing moved only
  add self-loops ``x -> x`` with an unchanged mid, which rescale a row of ``Q`` and ``R``
  together and leave ``g`` unchanged; so event time and clock sampling give the same chain up to
  what happens between samples.
- **bins**: ``n_imbalance`` equal-width bins of I, made mirror-symmetric: I < 1/2 goes to bin
  ``floor(I n)``, I > 1/2 to ``n - 1 - floor((1 - I) n)`` (computed from ``q_a / (q_b + q_a)``),
  I = 1/2 exactly (equal queues) to bin ``n // 2``; with n even the lookup at exactly I = 1/2
  returns the mean of the two middle bins (0 by symmetry). A bin edge ``k/n`` below 1/2 belongs
  to the bin above it, one above 1/2 to the bin below it, so ``bin(1 - I) = n - 1 - bin(I)``.
- **spread**: ``round((ask - bid) / tick_size)`` ticks, states 1 .. ``max_spread``. A row with
  a wider (or zero / negative: locked, crossed) spread, or an empty side, is not a state: it
  starts and ends no transition (``dropped["out_of_range"]`` counts the transitions lost), and
  the lookup returns NaN there (no estimate, rather than an extrapolation).
- **mid moves**: a change of the mid between consecutive rows, in half ticks; a move larger
  than ``max_move`` ticks is dropped (``dropped["large_move"]``), as the paper keeps only
  +-1/2 and +-1 tick.
- **symmetry**: with ``symmetrize=True`` (the paper's choice) every transition is also counted
  mirrored (I -> 1 - I on both ends, mid move -> -move), so ``g(1 - I, S) = -g(I, S)``; the
  table is antisymmetrised after the solve so that this holds bit for bit.
- **unvisited states**: a state never observed has ``Q``, ``R``, ``T`` rows of zero: ``g = 0``
  there (``counts`` says which). A set of states that is never left without a mid move makes
  ``1 - Q`` singular: :class:`~ofi_fast.errors.OFIError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ofi_fast.errors import OFIError


def _arr(a, name, n=None, dtype=np.float64):
    try:
        x = np.ascontiguousarray(a, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise OFIError(f"{name} cannot be read as {np.dtype(dtype).name}: {exc}",
                       field=name) from None
    if x.ndim != 1:
        raise OFIError(f"{name} must be one-dimensional, got shape {x.shape}", field=name)
    if n is not None and x.shape[0] != n:
        raise OFIError(f"{name} has {x.shape[0]} rows, ts has {n}", field=name)
    return x


def imbalance_bins(bid_sz, ask_sz, n_imbalance):
    """Bin of I = bid_sz / (bid_sz + ask_sz) (mirror-symmetric rule of the module docstring);
    -1 where both sizes are 0 or either is not finite."""
    qb = np.asarray(bid_sz, dtype=np.float64)
    qa = np.asarray(ask_sz, dtype=np.float64)
    n = int(n_imbalance)
    tot = qb + qa
    ok = np.isfinite(tot) & (tot > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.minimum(np.floor(qb / tot * n), n - 1)
        hi = n - 1 - np.minimum(np.floor(qa / tot * n), n - 1)
    b = np.where(qb < qa, lo, np.where(qb > qa, hi, n // 2))
    return np.where(ok, b, -1).astype(np.int64)


def spread_ticks(bid_px, ask_px, tick_size):
    """round((ask - bid) / tick_size) as int64; -1 where a price is not finite."""
    with np.errstate(invalid="ignore"):
        x = (np.asarray(ask_px, dtype=np.float64) - np.asarray(bid_px, dtype=np.float64)) \
            / tick_size
        ok = np.isfinite(x) & (np.abs(x) < 1e15)
        return np.where(ok, np.floor(np.where(ok, x, 0.0) + 0.5), -1).astype(np.int64)


def estimate(ts, bid_px, bid_sz, ask_px, ask_sz, tick_size, *, n_imbalance=10, max_spread=3,
             n_iter=6, max_move=1.0, symmetrize=True) -> dict[str, Any]:
    """Fit the chain; return ``table`` (max_spread, n_imbalance) of g in price units and the
    diagnostics (``G`` per iteration, ``counts`` of transitions leaving each state, ``dropped``).
    """
    t = _arr(ts, "ts", dtype=np.int64)
    n = t.shape[0]
    bp, bs = _arr(bid_px, "bid_px", n), _arr(bid_sz, "bid_sz", n)
    ap, as_ = _arr(ask_px, "ask_px", n), _arr(ask_sz, "ask_sz", n)
    tick = float(tick_size)
    if not (np.isfinite(tick) and tick > 0):
        raise OFIError(f"tick_size must be finite and > 0, got {tick_size!r}", field="tick_size")
    nb = _int(n_imbalance, "n_imbalance", 2, 10_000)
    ns = _int(max_spread, "max_spread", 1, 10_000)
    ni = _int(n_iter, "n_iter", 1, 10_000)
    mm = float(max_move)
    if not (np.isfinite(mm) and mm >= 0.5):
        raise OFIError(f"max_move must be >= 0.5 (ticks), got {max_move!r}", field="max_move")
    if n and np.any(np.diff(t) < 0):
        i = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
        raise OFIError(f"ts[{i}] = {t[i]} is before ts[{i - 1}] = {t[i - 1]}", field="ts",
                       index=i)
    for name, a in (("bid_sz", bs), ("ask_sz", as_)):
        bad = np.flatnonzero(a < 0)
        if bad.size:
            raise OFIError(f"{name}[{bad[0]}] = {a[bad[0]]} is negative", field=name,
                           index=int(bad[0]))
    b = imbalance_bins(bs, as_, nb)
    s = spread_ticks(bp, ap, tick)
    ok = (b >= 0) & (s >= 1) & (s <= ns)
    state = np.where(ok, (s - 1) * nb + b, -1)
    mid = 0.5 * (bp + ap)
    with np.errstate(invalid="ignore"):
        dm2 = np.rint(2.0 * (mid[1:] - mid[:-1]) / tick)      # mid move in half ticks
    x, y = state[:-1], state[1:]
    valid = (x >= 0) & (y >= 0)
    kmax = int(np.floor(2 * mm + 1e-9))
    big = valid & (np.abs(dm2) > kmax)
    use = valid & ~big
    x, y, d = x[use], y[use], dm2[use].astype(np.int64)
    nstate = ns * nb
    if symmetrize:
        def mirror(st):
            sp, bb = np.divmod(st, nb)
            return sp * nb + (nb - 1 - bb)
        x, y, d = np.r_[x, mirror(x)], np.r_[y, mirror(y)], np.r_[d, -d]
    counts = np.bincount(x, minlength=nstate).astype(np.float64)
    moves = np.array([k for k in range(-kmax, kmax + 1) if k != 0], dtype=np.int64)
    K = moves * (tick / 2.0)
    still = d == 0
    Q = np.zeros((nstate, nstate))
    np.add.at(Q, (x[still], y[still]), 1.0)
    T = np.zeros((nstate, nstate))
    np.add.at(T, (x[~still], y[~still]), 1.0)
    R = np.zeros((nstate, moves.size))
    np.add.at(R, (x[~still], np.searchsorted(moves, d[~still])), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(counts > 0, 1.0 / counts, 0.0)
    Q *= inv[:, None]
    T *= inv[:, None]
    R *= inv[:, None]
    A = np.eye(nstate) - Q
    try:
        G1 = np.linalg.solve(A, R @ K)
        B = np.linalg.solve(A, T)
    except np.linalg.LinAlgError:
        raise OFIError("the fitted chain has states it never leaves without a mid move (1 - Q "
                       "is singular): use fewer imbalance bins or a smaller max_spread, or "
                       "more data", field="bid_px") from None
    Gs = [G1]
    for _ in range(ni - 1):
        Gs.append(B @ Gs[-1])
    G = np.sum(Gs, axis=0).reshape(ns, nb)
    if symmetrize:
        G = 0.5 * (G - G[:, ::-1])
    return {"table": np.ascontiguousarray(G), "symmetric": bool(symmetrize),
            "G_iter": np.array(Gs).reshape(ni, ns, nb),
            "counts": counts.reshape(ns, nb).astype(np.int64),
            "n_transitions": int(use.sum()), "moves_ticks": moves / 2.0,
            "dropped": {"out_of_range": int((~valid).sum()), "large_move": int(big.sum())},
            "n_iter": ni, "max_move": mm}


def _int(v, name, lo, hi):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise OFIError(f"{name} must be an integer, got {v!r:.80}", field=name)
    if not lo <= int(v) <= hi:
        raise OFIError(f"{name} must be in [{lo}, {hi}], got {v}", field=name)
    return int(v)
