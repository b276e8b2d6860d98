"""Classify the sequence numbers of a batch against an edge's tracked state.

An edge numbers its batches 0, 1, 2, ... and never goes back (DESIGN §5). For each
edge, the numbers a batch brings are taken in ascending order:

* the next number, or the first ever seen: the normal case;
* a jump ahead opens a gap (the numbers skipped) that stays open until filled;
* a number inside an open gap is a late arrival and shrinks or splits the gap
  (two workers on a shared subscription, or an edge resending its spool, deliver
  out of order);
* any other number at or below the highest is a replay: a broker redelivery after
  a lost acknowledgement, or an edge sending the same batch again. Replays are
  harmless for the facts (idempotent keys) but worth counting. (A number received
  again with other content is a conflict; the writer tells the two apart by digest
  before classifying, see :mod:`ingest.writer`.)

Runs of consecutive numbers of one kind are reported as one event.
"""

from __future__ import annotations

from collections.abc import Iterable

from zhizao.storage.sequences import EdgeSequenceState, SequenceEvent, SequenceKind


def _remove_from_gaps(gaps: list[tuple[int, int]], seq: int) -> bool:
    for index, (first, last) in enumerate(gaps):
        if first <= seq <= last:
            pieces = [(a, b) for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
            gaps[index : index + 1] = pieces
            return True
        if first > seq:
            return False
    return False


def classify(edge_pk: int, state: EdgeSequenceState, seqs: Iterable[int]) -> list[SequenceEvent]:
    """Update ``state`` in place with ``seqs``; return the events, runs merged."""
    singles: list[tuple[SequenceKind, int, int]] = []
    for seq in sorted(seqs):
        if state.high is None or seq == state.high + 1:
            state.high = seq
        elif seq > state.high + 1:
            singles.append(("gap", state.high + 1, seq - 1))
            state.gaps.append((state.high + 1, seq - 1))
            state.high = seq
        elif _remove_from_gaps(state.gaps, seq):
            singles.append(("late", seq, seq))
        else:
            singles.append(("replay", seq, seq))
    events: list[SequenceEvent] = []
    for kind, first, last in singles:
        previous = events[-1] if events else None
        if (
            previous is not None
            and kind != "gap"
            and previous.kind == kind
            and previous.last_seq + 1 == first
        ):
            events[-1] = previous._replace(last_seq=last)
        else:
            events.append(SequenceEvent(edge_pk, kind, first, last))
    return events


def received_before(state: EdgeSequenceState, seq: int) -> bool:
    """Whether ``seq`` was received already, as far as ``state`` tells."""
    if state.high is None or seq > state.high:
        return False
    return not any(first <= seq <= last for first, last in state.gaps)
