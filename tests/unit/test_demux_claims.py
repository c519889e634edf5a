"""TargetClaims alone: which namespace a Walk after a remote snapshot (AlreadyExists on
Prepare) belongs to, how long a claim lasts, and the filter helper it reads targets with.
Through the router: test_demux_claims_routing.py."""

from __future__ import annotations

import asyncio

import pytest

from snapmux.application.target_claims import TargetClaims
from snapmux.domain.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from snapmux.domain.filters import required_value
from snapmux.domain.labels import REF_LABEL
from tests.fakes.timers import FakeTimers
from tests.support.claims import claimed, settle, walk_filter

REF = ("labels", REF_LABEL)


# -- the filter helper -----------------------------------------------------------------------------


@pytest.mark.parametrize("filters, expected", [
    ([walk_filter("sha256:abc")], "sha256:abc"),
    (['labels."containerd.io/snapshot.ref"=="quoted,value"'], "quoted,value"),
    (['"labels"."containerd.io/snapshot.ref"==x'], "x"),
    (["name==x"], None),
    ([walk_filter("x"), walk_filter("x", "p")], "x"),
    ([walk_filter("x"), walk_filter("y")], None),
    ([walk_filter("x"), "kind==committed"], None),
    (['labels."containerd.io/snapshot.ref"!=x'], None),
    ([], None),
    ([""], None),
])
def test_required_value_reads_the_one_value_every_filter_demands(filters, expected):
    assert required_value(filters, REF) == expected


def test_required_value_refuses_bad_syntax():
    with pytest.raises(InvalidArgumentError):
        required_value(["labels.==x"], REF)


# -- TargetClaims alone ----------------------------------------------------------------------------


async def already_exists():
    raise AlreadyExistsError("target snapshot: already exists")


async def answered():
    return "mounts"


async def test_already_exists_keeps_the_claim_for_one_list():
    claims = TargetClaims(schedule=FakeTimers())
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    assert claimed(claims) == {"t1": "vm-a"}
    assert claims.owner(["kind==committed"]) is None  # no ref selector: not this claim's List
    assert claims.owner([walk_filter("t2")]) is None
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    assert claims.owner([walk_filter("t1")]) is None and claimed(claims) == {}


async def test_any_other_outcome_releases_at_once():
    claims = TargetClaims(schedule=FakeTimers())
    assert await claims.prepare("vm-a", "t1", answered) == "mounts"
    assert claimed(claims) == {}

    async def not_found():
        raise NotFoundError("parent snapshot: not found")

    with pytest.raises(NotFoundError):
        await claims.prepare("vm-a", "t1", not_found)
    assert claimed(claims) == {} and claims.owner([walk_filter("t1")]) is None


async def test_a_second_namespace_waits_for_the_first_ones_list_on_that_target_only():
    claims = TargetClaims(schedule=FakeTimers())
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    forwarded = []

    async def record(namespace):
        forwarded.append(namespace)
        raise AlreadyExistsError("already exists")

    waiting = asyncio.create_task(claims.prepare("vm-b", "t1", lambda: record("vm-b")))
    assert await claims.prepare("vm-b", "t2", answered) == "mounts"  # another layer is not held up
    await settle()
    assert forwarded == [] and not waiting.done()
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    with pytest.raises(AlreadyExistsError):
        await waiting
    assert forwarded == ["vm-b"] and claims.owner([walk_filter("t1")]) == "vm-b"


async def test_an_unanswered_claim_expires_after_the_hold():
    timers = FakeTimers()
    claims = TargetClaims(hold=7.5, schedule=timers)
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    waiting = asyncio.create_task(claims.prepare("vm-b", "t1", answered))
    await settle()
    assert not waiting.done() and [e[0] for e in timers.pending] == [7.5]
    assert timers.fire_all() == 1
    assert await waiting == "mounts"
    assert claimed(claims) == {} and claims.owner([walk_filter("t1")]) is None


async def test_a_late_timer_never_releases_a_newer_claim():
    class IgnoresCancel(FakeTimers):
        def fire_all(self) -> int:
            due, self.pending = self.pending, []
            for _, callback, _ in due:
                callback()
            return len(due)

    timers = IgnoresCancel()
    claims = TargetClaims(schedule=timers)
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-b", "t1", already_exists)
    timers.pending = timers.pending[:1]  # only vm-a's (released) timer fires
    timers.fire_all()
    assert claimed(claims) == {"t1": "vm-b"}


async def test_a_cancelled_waiter_leaves_nothing_behind():
    claims = TargetClaims(schedule=FakeTimers())
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    waiting = asyncio.create_task(claims.prepare("vm-b", "t1", answered))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert claims.owner([walk_filter("t1")]) == "vm-a"
    assert claimed(claims) == {}


async def test_the_default_hold_runs_on_the_event_loop():
    claims = TargetClaims(hold=0.0)
    with pytest.raises(AlreadyExistsError):
        await claims.prepare("vm-a", "t1", already_exists)
    released = asyncio.create_task(claims.prepare("vm-b", "t1", answered))
    assert await asyncio.wait_for(released, 5) == "mounts"
