"""The SnapshotService contract: containerd's snapshotter semantics, for every implementation.

Subclass `SnapshotServiceContract` and provide an async `snapshots` fixture.
It runs against the in-memory fake, the local SQLite/overlay snapshotter, the
gRPC client over a real server, and the demux router, so each can stand in
for the others.
"""

from __future__ import annotations

import pytest

from snapmux.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from snapmux.domain.model import Info, Kind, Mount


async def listed(snapshots, *filters: str) -> dict[str, Info]:
    return {info.name: info async for info in snapshots.walk(list(filters))}


class SnapshotServiceContract:
    async def test_prepare_then_stat_reports_an_active_snapshot(self, snapshots):
        mounts = await snapshots.prepare("ns/1/a", "", {"l": "v"})
        assert mounts and all(isinstance(m, Mount) for m in mounts)
        info = await snapshots.stat("ns/1/a")
        assert (info.name, info.kind, info.parent, dict(info.labels)) == ("ns/1/a", Kind.ACTIVE, "", {"l": "v"})

    async def test_commit_turns_the_active_snapshot_into_a_committed_name(self, snapshots):
        await snapshots.prepare("ns/1/a")
        await snapshots.commit("ns/1/layer", "ns/1/a", {"c": "1"})
        info = await snapshots.stat("ns/1/layer")
        assert (info.kind, dict(info.labels)) == (Kind.COMMITTED, {"c": "1"})
        with pytest.raises(NotFoundError):
            await snapshots.stat("ns/1/a")

    async def test_child_records_its_parent(self, snapshots):
        await snapshots.prepare("a")
        await snapshots.commit("base", "a")
        await snapshots.prepare("child", "base")
        assert (await snapshots.stat("child")).parent == "base"

    async def test_duplicate_key_is_already_exists(self, snapshots):
        await snapshots.prepare("a")
        with pytest.raises(AlreadyExistsError):
            await snapshots.prepare("a")
        with pytest.raises(AlreadyExistsError):
            await snapshots.view("a")

    async def test_commit_onto_an_existing_name_is_already_exists(self, snapshots):
        await snapshots.prepare("a")
        await snapshots.commit("n", "a")
        await snapshots.prepare("b")
        with pytest.raises(AlreadyExistsError):
            await snapshots.commit("n", "b")
        assert (await snapshots.stat("b")).kind == Kind.ACTIVE

    async def test_unknown_parent_is_not_found_and_creates_nothing(self, snapshots):
        with pytest.raises(NotFoundError):
            await snapshots.prepare("a", "missing")
        with pytest.raises(NotFoundError):
            await snapshots.stat("a")

    async def test_parent_must_be_committed(self, snapshots):
        await snapshots.prepare("active")
        with pytest.raises(InvalidArgumentError):
            await snapshots.prepare("child", "active")
        with pytest.raises(NotFoundError):
            await snapshots.stat("child")

    async def test_empty_key_is_invalid(self, snapshots):
        with pytest.raises(InvalidArgumentError):
            await snapshots.prepare("")

    async def test_key_with_nul_or_huge_is_invalid_and_creates_nothing(self, snapshots):
        for key in ("a\x00b", "k" * 65536):
            with pytest.raises(InvalidArgumentError):
                await snapshots.prepare(key)
        assert await listed(snapshots) == {}

    async def test_keys_are_opaque_not_paths(self, snapshots):
        for key in ("../../etc", "/abs/key", "ns/42/sha256:abc", "..", "a/../../b"):
            await snapshots.prepare(key)
            assert (await snapshots.stat(key)).name == key
        assert set(await listed(snapshots)) == {"../../etc", "/abs/key", "ns/42/sha256:abc", "..", "a/../../b"}

    async def test_commit_of_a_view_is_failed_precondition(self, snapshots):
        await snapshots.prepare("a")
        await snapshots.commit("base", "a")
        await snapshots.view("v", "base")
        with pytest.raises(FailedPreconditionError):
            await snapshots.commit("n", "v")

    async def test_commit_of_a_committed_snapshot_is_failed_precondition(self, snapshots):
        await snapshots.prepare("a")
        await snapshots.commit("base", "a")
        with pytest.raises(FailedPreconditionError):
            await snapshots.commit("again", "base")

    async def test_mounts_of_a_committed_snapshot_is_failed_precondition(self, snapshots):
        await snapshots.prepare("a")
        await snapshots.commit("base", "a")
        with pytest.raises(FailedPreconditionError):
            await snapshots.mounts("base")

    async def test_mounts_repeats_what_prepare_returned(self, snapshots):
        prepared = await snapshots.prepare("a")
        assert await snapshots.mounts("a") == prepared

    async def test_remove_refuses_a_parent_with_children(self, snapshots):
        await snapshots.prepare("a")
        await snapshots.commit("base", "a")
        await snapshots.prepare("child", "base")
        with pytest.raises(FailedPreconditionError):
            await snapshots.remove("base")
        await snapshots.remove("child")
        await snapshots.remove("base")
        assert await listed(snapshots) == {}

    async def test_remove_of_unknown_is_not_found(self, snapshots):
        with pytest.raises(NotFoundError):
            await snapshots.remove("nope")

    async def test_oversize_label_is_invalid_and_changes_nothing(self, snapshots):
        with pytest.raises(InvalidArgumentError):
            await snapshots.prepare("a", "", {"k": "v" * 4096})
        with pytest.raises(NotFoundError):
            await snapshots.stat("a")
        await snapshots.prepare("a", "", {"k": "v" * 4095})
        with pytest.raises(InvalidArgumentError):
            await snapshots.commit("n", "a", {"big": "x" * 5000})
        assert (await snapshots.stat("a")).kind == Kind.ACTIVE

    async def test_update_labels_by_field_path(self, snapshots):
        await snapshots.prepare("a", "", {"keep": "1", "drop": "2"})
        info = await snapshots.stat("a")
        change = Info(info.name, info.kind, info.parent, {"new": "3", "keep": "1"})
        updated = await snapshots.update(change, ["labels.new", "labels.drop"])
        assert dict(updated.labels) == {"keep": "1", "new": "3"}
        assert dict((await snapshots.stat("a")).labels) == {"keep": "1", "new": "3"}
        replaced = await snapshots.update(Info("a", Kind.ACTIVE, "", {"only": "x"}), ["labels"])
        assert dict(replaced.labels) == {"only": "x"}

    async def test_update_with_empty_mask_replaces_labels(self, snapshots):
        await snapshots.prepare("a", "", {"old": "1"})
        updated = await snapshots.update(Info("a", Kind.ACTIVE, "", {"new": "2"}))
        assert dict(updated.labels) == {"new": "2"}

    async def test_update_of_another_field_path_is_invalid(self, snapshots):
        await snapshots.prepare("a", "", {"old": "1"})
        for path in ("name", "parent", "kind", "labels.", "created_at"):
            with pytest.raises(InvalidArgumentError):
                await snapshots.update(Info("a", Kind.ACTIVE, "", {"x": "y"}), [path])
        assert dict((await snapshots.stat("a")).labels) == {"old": "1"}

    async def test_update_of_unknown_is_not_found(self, snapshots):
        with pytest.raises(NotFoundError):
            await snapshots.update(Info("nope", Kind.ACTIVE), ["labels"])

    async def test_list_filters(self, snapshots):
        await snapshots.prepare("a", "", {"ref": "r1"})
        await snapshots.commit("base", "a", {"ref": "r1", "containerd.io/snapshot.ref": "t"})
        await snapshots.prepare("child", "base", {"x": "1"})
        await snapshots.view("v", "base")
        assert set(await listed(snapshots)) == {"base", "child", "v"}
        assert set(await listed(snapshots, "name==child")) == {"child"}
        assert set(await listed(snapshots, "parent==base")) == {"child", "v"}
        assert set(await listed(snapshots, "kind==view")) == {"v"}
        assert set(await listed(snapshots, "kind==committed")) == {"base"}
        assert set(await listed(snapshots, 'labels."containerd.io/snapshot.ref"==t,parent==""')) == {"base"}
        assert set(await listed(snapshots, "labels.x")) == {"child"}
        assert set(await listed(snapshots, "kind==view", "labels.x==1")) == {"v", "child"}

    async def test_list_with_a_bad_filter_is_invalid(self, snapshots):
        await snapshots.prepare("a")
        for bad in ("name==", "==x", 'labels."open', "name=x"):
            with pytest.raises(InvalidArgumentError):
                await listed(snapshots, bad)

    async def test_list_streams_more_than_one_batch(self, snapshots):
        for i in range(250):
            await snapshots.prepare(f"k{i}")
        assert len(await listed(snapshots)) == 250

    async def test_usage_of_unknown_is_not_found(self, snapshots):
        with pytest.raises(NotFoundError):
            await snapshots.usage("nope")

    async def test_usage_of_new_snapshot_is_small(self, snapshots):
        await snapshots.prepare("a")
        usage = await snapshots.usage("a")
        assert usage.size >= 0 and usage.inodes >= 0

    async def test_cleanup_keeps_every_snapshot(self, snapshots):
        await snapshots.prepare("a")
        await snapshots.commit("base", "a")
        await snapshots.prepare("b", "base")
        await snapshots.cleanup()
        assert set(await listed(snapshots)) == {"base", "b"}

    async def test_view_of_an_active_parent_is_invalid_and_creates_nothing(self, snapshots):
        await snapshots.prepare("active")
        with pytest.raises(InvalidArgumentError):
            await snapshots.view("v", "active")
        assert set(await listed(snapshots)) == {"active"}

    async def test_commit_of_unknown_is_not_found(self, snapshots):
        with pytest.raises(NotFoundError):
            await snapshots.commit("n", "nope")
        assert await listed(snapshots) == {}

    async def test_a_removed_key_can_be_prepared_again(self, snapshots):
        await snapshots.prepare("a", "", {"gen": "1"})
        await snapshots.remove("a")
        with pytest.raises(NotFoundError):
            await snapshots.stat("a")
        await snapshots.prepare("a", "", {"gen": "2"})
        assert dict((await snapshots.stat("a")).labels) == {"gen": "2"}

    async def test_list_reflects_updates_and_commits(self, snapshots):
        await snapshots.prepare("a", "", {"x": "1"})
        await snapshots.update(Info("a", Kind.ACTIVE, "", {"x": "2"}), ["labels.x"])
        assert dict((await listed(snapshots))["a"].labels) == {"x": "2"}
        await snapshots.commit("c", "a", {"y": "3"})
        infos = await listed(snapshots)
        assert set(infos) == {"c"} and infos["c"].kind == Kind.COMMITTED and dict(infos["c"].labels) == {"y": "3"}
