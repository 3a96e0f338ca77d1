"""The task payloads (lifecycle.payloads): typed in the engine, plain JSON on the wire, and
readable across a version change in the middle of a run."""

from __future__ import annotations

import json
import logging

from lifecycle.payloads import Extracted, SliceResult, SliceTask
from lifecycle.stores import Plan, Slice


def test_a_payload_goes_through_xcom_as_plain_json_and_comes_back_equal():
    extracted = Extracted(
        cutoff="2026-05-28T22:00:00+00:00",
        tenant_cutoffs={"acme": "2025-11-28T23:00:00+00:00"},
        plan=Plan(total=10, expired=4, held=1, held_by_hold={"7": 1}),
        warnings=["hold 7 (customer) reaches no records in this policy"],
        attempt=2,
    )
    wire = json.loads(json.dumps(extracted.to_json()))  # what XCom stores
    assert wire["plan"]["held_by_hold"] == {"7": 1} and wire["attempt"] == 2
    assert Extracted.from_json(wire) == extracted
    task = SliceTask.of(Slice(index=1, expired=5, after=10, through=20, past=6), attempt=2)
    assert task.to_json() == {
        "index": 1,
        "expired": 5,
        "after": 10,
        "through": 20,
        "past": 6,
        "from_block": None,
        "to_block": None,
        "slices": 1,
        "attempt": 2,
    }
    assert task.bounds() == Slice(index=1, expired=5, after=10, through=20, past=6)
    # A slice of blocks, of a split into 3: block numbers only, whatever the key.
    blocks = SliceTask.of(Slice(index=2, expired=5, from_block=40), attempt=0, slices=3)
    wire = json.loads(json.dumps(blocks.to_json()))
    assert (wire["from_block"], wire["to_block"], wire["slices"]) == (40, None, 3)
    assert SliceTask.from_json(wire).bounds() == Slice(index=2, expired=5, from_block=40)


def test_another_attempts_payload_is_not_this_attempts():
    wire = {"slice": 0, "deleted": 5, "batches": 1, "seconds": 0.1, "attempt": 0}
    assert SliceResult.of_attempt(wire, 1) is None
    assert SliceResult.of_attempt(None, 1) is None
    assert SliceResult.of_attempt(wire, 0) == SliceResult(
        slice=0, deleted=5, batches=1, seconds=0.1, attempt=0
    )


def test_a_payload_written_by_the_former_version_still_reads(caplog):
    """A run started before an upgrade: its delete tasks said `shard`; a payload that cannot be
    read at all is treated as a step that left nothing (the row is still written), and the
    log says which, never what it held."""
    former = {"shard": 3, "deleted": 5, "batches": 1, "seconds": 0.1, "failed": {}, "attempt": 0}
    assert SliceResult.of_attempt(former, 0).slice == 3
    caplog.set_level(logging.WARNING, logger="lifecycle.payloads")
    garbled = {"slice": "+31612345678", "deleted": 5, "attempt": 0}
    assert SliceResult.of_attempt(garbled, 0) is None
    assert "a SliceResult XCom could not be read" in caplog.text
    assert "31612345678" not in caplog.text
