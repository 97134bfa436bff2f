"""What happened to the input on its way to the bars: :class:`DataQuality`.

Every source of :func:`ofi_fast.feeds.open` fills one of these while it is read (``source.quality``
is a snapshot of the counters so far), and :func:`ofi_fast.analyze` adds what the book saw
(crossed / locked states; no book policy removes levels) and which bars the fit left out.
Nothing a reader drops goes uncounted: each cause has its own count, its share of the input,
and the gaps are listed one by one with where they are and how long the book stayed invalid.

Pure Python; no import of the compiled modules.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: Causes of :attr:`DataQuality.dropped` that lose information (the others are the normal
#: work of a sync rule: diffs older than the snapshot are already in it).
LOSS_CAUSES = ("gap", "checksum", "parse_skip", "unsynced_at_end")

#: Every cause of :attr:`DataQuality.dropped`, in the order the summary prints them.
DROP_CAUSES = ("before_snapshot", "stale", "gap", "checksum", "parse_skip", "unsynced_at_end")


@dataclass(frozen=True)
class Gap:
    """One break of a feed's sequence (ids that do not chain, or a failed checksum).

    ``path``:``line`` is the message that broke it; ``first_id`` / ``last_id`` its ids and
    ``prev_id`` the id it should have followed (None where the feed has no ids, e.g. a Kraken
    checksum). ``ts`` (ns, the clock of the bars) is when the book became invalid, ``resync_ts``
    when a snapshot made it valid again (None: never, up to the end of the input);
    ``resync_line`` that snapshot's line. ``rows_invalid`` counts the messages dropped in
    between (the breaking one included), ``seconds_invalid`` the time from ``ts`` to the resync
    (or to the last message dropped when there was no resync).
    """

    path: str
    line: int
    detail: str
    ts: int
    first_id: int | None = None
    last_id: int | None = None
    prev_id: int | None = None
    resync_ts: int | None = None
    resync_line: int | None = None
    rows_invalid: int = 0
    seconds_invalid: float = 0.0

    def describe(self) -> str:
        """One line: where, which ids, how long."""
        ids = "" if self.first_id is None else f" (ids {self.first_id}..{self.last_id}, " \
            f"previous {self.prev_id})"
        end = (f"resynced at line {self.resync_line}" if self.resync_line is not None
               else "never resynced")
        return (f"{self.path}:{self.line}{ids}: {self.rows_invalid:,} messages dropped over "
                f"{self.seconds_invalid:.3f} s, {end}")


@dataclass(frozen=True)
class DataQuality:
    """Counts of what was read, applied and dropped, for one input (see README "DataQuality").

    - ``source``: the input's name; ``unit``: what ``messages_*`` count ("messages" for
      exchange feeds, whose book messages hold several L2 rows; "rows" for quote files and the
      simulator, one event a row).
    - ``rows_read``: event rows the reader handed on (L2 delta rows, snapshots included, or
      quote rows); ``rows_applied``: those that reached the book / OFI (the reader never hands
      on a row it dropped, so both are equal unless a consumer stopped early).
    - ``messages_read``: book messages of the chosen symbol in the input (diffs and snapshots,
      dropped ones included); ``messages_applied``: those applied.
    - ``trades_read``: trades handed on.
    - ``dropped``: messages dropped, by cause: ``before_snapshot`` (updates before the first
      snapshot: harmless, the snapshot holds them), ``stale`` (diffs older than the snapshot:
      harmless), ``gap`` (after a sequence gap until the resync), ``checksum`` (a Kraken update
      whose checksum failed), ``parse_skip`` (malformed lines skipped under
      ``on_error="skip"``), ``unsynced_at_end`` (diffs buffered for a snapshot that never came).
    - ``gaps``: one :class:`Gap` per break; ``resyncs``: gaps that a later snapshot repaired.
    - ``parse_first``: the first skipped lines as (line, reason); ``truncated``: (line, reason)
      when a compressed container ended early and what came before the cut was kept.
    - ``other_symbol``: messages of other symbols (not read, not a loss).
    - ``crossed`` / ``locked``: book states with best bid > / == best ask, counted by the book
      at the end of each exchange message (see ``Book.n_crossed``); the book keeps such states
      as the feed shows them (no level is ever deleted by a policy).
    - ``stale_orders``: L3 inputs (Bitstamp): orders of the file's opening snapshot that a live
      order contradicted (a live order at or through their price on the other side before any
      live event named them) and that the reader therefore took off the book; a later live
      change that names one puts it back and is not counted.
    - ``invalid_bars``: bars that overlap a gap before its resync (``valid`` False in the bar
      table; left out of the fit).
    - ``reconnects`` (live sessions, :mod:`ofi_fast.live`): connections lost and replaced;
      ``disconnects``: one :class:`Gap` per outage (``detail`` the reason, ``ts`` when the
      connection was lost, ``resync_ts`` when a fresh snapshot made the book valid again).
    """

    source: str
    unit: str = "messages"
    rows_read: int = 0
    rows_applied: int = 0
    messages_read: int = 0
    messages_applied: int = 0
    trades_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    gaps: tuple[Gap, ...] = ()
    resyncs: int = 0
    parse_first: tuple[tuple[int, str], ...] = ()
    truncated: tuple[int, str] | None = None
    other_symbol: int = 0
    crossed: int = 0
    locked: int = 0
    stale_orders: int = 0
    invalid_bars: int = 0
    reconnects: int = 0
    disconnects: tuple[Gap, ...] = ()

    @property
    def lost(self) -> int:
        """Messages lost (the causes of :data:`LOSS_CAUSES`)."""
        return sum(self.dropped.get(c, 0) for c in LOSS_CAUSES)

    def share(self, cause: str) -> float:
        """``dropped[cause]`` as a share of ``messages_read`` (NaN for an empty input)."""
        n = self.messages_read
        return self.dropped.get(cause, 0) / n if n else math.nan

    @property
    def lost_share(self) -> float:
        """:attr:`lost` as a share of ``messages_read`` (NaN for an empty input)."""
        return self.lost / self.messages_read if self.messages_read else math.nan

    def warning(self) -> str | None:
        """One line naming how much was lost (None when nothing was)."""
        if not self.lost and self.truncated is None and not self.gaps:
            return None
        parts = [f"{self.dropped.get(c, 0):,} {c.replace('_', ' ')}" for c in LOSS_CAUSES
                 if self.dropped.get(c, 0)]
        msg = (f"{self.source}: data lost: {self.lost:,} of {self.messages_read:,} "
               f"{self.unit} ({100 * self.lost_share:.1f} %: {', '.join(parts) or 'none'})")
        if self.gaps:
            msg += f"; {len(self.gaps)} gap{'s' if len(self.gaps) != 1 else ''}, first at " \
                   f"{self.gaps[0].path}:{self.gaps[0].line}"
        if self.truncated is not None:
            msg += f"; input truncated at line {self.truncated[0]} ({self.truncated[1]})"
        if self.invalid_bars:
            msg += f"; {self.invalid_bars:,} bars left out of the fit"
        return msg

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (gaps as dicts, shares added)."""
        d = dataclasses.asdict(self)
        d["gaps"] = [dataclasses.asdict(g) for g in self.gaps]
        d["disconnects"] = [dataclasses.asdict(g) for g in self.disconnects]
        d["parse_first"] = [list(x) for x in self.parse_first]
        d["truncated"] = list(self.truncated) if self.truncated is not None else None
        d["lost"] = self.lost
        d["lost_share"] = None if math.isnan(self.lost_share) else self.lost_share
        return d


def errorlog_fields(*logs) -> dict[str, Any]:
    """``dropped["parse_skip"]``, ``parse_first`` and ``truncated`` from readers' ErrorLogs."""
    logs = [lg for lg in logs if lg is not None]
    first: list[tuple[int, str]] = []
    trunc = None
    for lg in logs:
        first.extend(lg.first)
        if trunc is None and getattr(lg, "truncated", None) is not None:
            trunc = tuple(lg.truncated)
    return {"parse_skip": sum(lg.count for lg in logs), "parse_first": tuple(first[:20]),
            "truncated": trunc}
