"""Publish a wishlist of images into one shared layout: incremental, parallel, many publishers.

Every image is resolved (wildcards through the tag list, the asked-for platforms from an
index), then its missing layers are fetched by a pool of `jobs` workers shared by all
images; a layer wanted twice is fetched once, and a download cut short resumes where it
stopped (blob_spool.py). A layer already in place costs one stat
and no request. Across processes and hosts, each layer is fetched under its lock file
(locks.py), so two publishers never download it both; whoever waited finds it in place.
Once an image's layers are in, its chains are built (chain_build.py) and its record written
(`.metadata/`, ducc.py). Each image fails alone: the error is kept in its result and the
others go on. `stop` (SIGTERM) lets running layers finish and starts no new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from snapmux.adapters.cvmfs import blob_spool, ducc
from snapmux.adapters.cvmfs.blob_spool import ResumingOpener
from snapmux.adapters.cvmfs.chain_build import build_chain
from snapmux.adapters.cvmfs.layers import parse_digest
from snapmux.adapters.cvmfs.locks import DEFAULT_STALE_AFTER, FileLock, LockWaitStopped
from snapmux.adapters.cvmfs.oci import RegistrySource, host_platform, open_source
from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.publish import BlobOpener, LayoutPublisher
from snapmux.adapters.cvmfs.publish_progress import Guarded, NoProgress, Progress, counted
from snapmux.adapters.durable import write_atomically
from snapmux.adapters.cvmfs.recipe import Wanted, list_tags, matching
from snapmux.domain.errors import InvalidArgumentError

log = logging.getLogger(__name__)


class Stopped(Exception):
    """Asked to stop (SIGTERM) before this work began."""


@dataclass
class ImageResult:
    reference: str
    platform: str = ""
    published: int = 0
    skipped: int = 0
    bytes: int = 0
    chains: int = 0
    seconds: float = 0.0
    error: str = ""
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """What `error` says, as raised: library callers tell a refused image (InvalidArgumentError)
    from a registry that is down (UnavailableError) by it, not by parsing the line."""
    stopped: bool = False
    """Not failed: SIGTERM came first (the next run publishes it)."""

    def line(self) -> str:
        name = f"{self.reference} [{self.platform}]" if self.platform else self.reference
        if self.error:
            return f"publish failed: {name}: {self.error}"
        return (f"ok {name}: published {self.published} layer(s) ({self.bytes} bytes), skipped {self.skipped}, "
                f"{self.chains} chain(s) written, {self.seconds:.2f} s")


@dataclass
class Summary:
    images: list[ImageResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[ImageResult]:
        return [image for image in self.images if image.error and not image.stopped]

    @property
    def stopped(self) -> list[ImageResult]:
        return [image for image in self.images if image.stopped]

    def totals(self) -> dict[str, int | float]:
        return {"published": sum(image.published for image in self.images),
                "skipped": sum(image.skipped for image in self.images),
                "bytes": sum(image.bytes for image in self.images),
                "ok": len(self.images) - len(self.failed) - len(self.stopped),
                "failed": len(self.failed), "stopped": len(self.stopped), "seconds": round(self.seconds, 3)}

    def line(self, target: str) -> str:
        total = self.totals()
        return (f"published {total['published']} layer(s), skipped {total['skipped']} already present into {target}: "
                f"{total['ok']} image(s) ok, {total['failed']} failed, {total['stopped']} stopped, "
                f"{total['bytes']} bytes in {self.seconds:.2f} s")


def record_key(reference: str, platform: str) -> str:
    return hashlib.sha256(f"{reference} {platform}".encode()).hexdigest()


class SitePublisher:
    def __init__(self, base: str, jobs: int = 4, platforms: list[str] | None = None, authfile: str | None = None,
                 stop: threading.Event | None = None, limits: LayerLimits | None = None,
                 stale_after: float = DEFAULT_STALE_AFTER, progress: Progress | None = None) -> None:
        self.layout = LayoutPublisher(base, limits)
        self.base, self.jobs = self.layout.store.base, max(1, jobs)
        self.platforms = platforms or [host_platform()]
        self.authfile, self.stale_after = authfile, stale_after
        self.stop = stop or threading.Event()
        self.progress = Guarded(progress or NoProgress())
        self._layers: dict[str, Future] = {}
        self._mutex = threading.Lock()

    def run(self, inputs: list[Wanted]) -> Summary:
        """Tag lists are read concurrently, so a slow registry holds up only its own inputs;
        an image named twice (a wildcard and its tag) is published once."""
        started, summary = time.monotonic(), Summary()
        self._layers.clear()
        with ThreadPoolExecutor(self.jobs, "layer") as layers, ThreadPoolExecutor(self.jobs, "image") as images, \
                ThreadPoolExecutor(self.jobs, "tags") as tags:
            self._pool = layers
            jobs: dict[tuple[str, str], Future] = {}
            for expanded in as_completed([tags.submit(self._expand, wanted) for wanted in inputs]):
                found = expanded.result()
                if isinstance(found, ImageResult):
                    summary.images.append(found)
                    continue
                for each, platform in ((each, platform) for each in found for platform in self.platforms):
                    if (each.reference, platform) not in jobs:
                        jobs[each.reference, platform] = images.submit(self._image, each, platform)
            summary.images.extend(job.result() for job in jobs.values())
        self.progress.close()
        summary.seconds = time.monotonic() - started
        return summary

    def _expand(self, wanted: Wanted) -> list[Wanted] | ImageResult:
        if wanted.reference.startswith(("oci:", "oci-archive:")) or not wanted.wildcard:
            return [wanted]
        try:
            source = RegistrySource(f"{wanted.repository}:latest", self._spool(), wanted.plain_http, self.authfile)
            tags = matching(list_tags(source.client, source.repo), wanted.tag)
        except Exception as error:  # noqa: BLE001 - one registry's failure is this input's result
            return ImageResult(wanted.reference, error=f"listing tags: {reason_of(error)}")
        if not tags:
            return ImageResult(wanted.reference, error="no tag matches")
        return [Wanted(f"{wanted.repository}:{tag}", wanted.plain_http) for tag in tags]

    def _spool(self) -> str:
        return os.path.join(self.base, ducc.LAYERS_DIR)

    def _image(self, wanted: Wanted, platform: str) -> ImageResult:
        result, started = ImageResult(wanted.reference, platform), time.monotonic()
        try:
            self._publish_image(wanted, platform, result)
        except (Stopped, LockWaitStopped) as error:
            result.error, result.stopped, result.exception = f"stopped: {error}", True, error
        except Exception as error:  # noqa: BLE001 - bad registries, tars, json: this image's result
            result.error, result.exception = reason_of(error), error
        result.seconds = time.monotonic() - started
        log.info("%s", result.line())
        return result

    def _publish_image(self, wanted: Wanted, platform: str, result: ImageResult) -> None:
        if self.stop.is_set():
            raise Stopped("stopped before it began")
        source = open_source(wanted.reference, self._spool(), wanted.plain_http, self.authfile)
        source.platform = platform
        image = source.image()
        descriptors = json.loads(image.manifest)["layers"]
        digests = [layer["digest"] for layer in descriptors]
        chains = ducc.chain_ids(digests)
        if not self._recorded(wanted.reference, platform, image.manifest_digest):
            self._write_record(wanted.reference, platform, image.manifest_digest, digests, chains, complete=False)
        sizes = {layer["digest"]: layer.get("size") for layer in descriptors}
        opener = ResumingOpener(source, self._spool(), sizes, self.progress.advanced) \
            if isinstance(source, RegistrySource) else counted(source.open_blob, self.progress.advanced, sizes)
        owned = {digest: self._layer_future(digest, opener, sizes.get(digest)) for digest in digests}
        for layer in descriptors:
            future, mine = owned[layer["digest"]]
            if future.result() == "published" and mine:
                result.published, result.bytes = result.published + 1, result.bytes + int(layer.get("size", 0))
            else:
                result.skipped += 1
        result.chains = self._build_chains(digests, chains)
        self._write_manifest(image.manifest_digest, image.manifest, image.config)
        self._write_record(wanted.reference, platform, image.manifest_digest, digests, chains, complete=True)

    def _layer_future(self, digest: str, opener: BlobOpener, size: int | None) -> tuple[Future, bool]:
        with self._mutex:
            if digest in self._layers:
                return self._layers[digest], False
            future = self._layers[digest] = self._pool.submit(self._publish_layer, digest, opener, size)
            return future, True

    def _publish_layer(self, digest: str, opener: BlobOpener, size: int | None) -> str:
        """Each layer this pass owns ends with one `finished` call, whatever happened."""
        try:
            outcome = self._fetch_layer(digest, opener, size)
        except (Stopped, LockWaitStopped):
            self.progress.finished(digest, "stopped")
            raise
        except BaseException:
            self.progress.finished(digest, "failed")
            raise
        self.progress.finished(digest, outcome)
        return outcome

    def _fetch_layer(self, digest: str, opener: BlobOpener, size: int | None) -> str:
        hex_digest = parse_digest(digest)
        store = self.layout.store
        if store.check_now(hex_digest).exists:
            return "skipped"
        if self.stop.is_set():
            raise Stopped(f"stopped before layer {digest}")
        folder = os.path.dirname(store.layer_dir(hex_digest))
        with FileLock(os.path.join(folder, ducc.LOCK_PREFIX + hex_digest), self.stale_after).held(self.stop):
            if store.check_now(hex_digest).exists:
                return "skipped"  # another publisher did it while we waited
            ducc.remove_leftovers(folder, hex_digest)
            self.progress.started(digest, size)
            try:
                written = self.layout.publish_layer(digest, opener)
            except InvalidArgumentError:
                blob_spool.done(self._spool(), hex_digest)  # bad data: never resume from it
                raise
            blob_spool.done(self._spool(), hex_digest)
        return "published" if written else "skipped"

    def _build_chains(self, digests: list[str], chains: list[str]) -> int:
        store, written, parent = self.layout.store, 0, None
        if not all(store.check_now(parse_digest(digest)).published for digest in digests):
            log.warning("not writing chains: some layers were not written by snapmux (foreign whiteouts)")
            return 0
        for digest, chain in zip(digests, chains):
            if self.stop.is_set():
                raise Stopped("stopped before its chains were complete")
            chain_hex = parse_digest(chain)
            folder = os.path.dirname(ducc.chain_dir(self.base, chain_hex))
            if not os.path.isdir(ducc.chain_dir(self.base, chain_hex)):
                with FileLock(os.path.join(folder, ducc.LOCK_PREFIX + chain_hex), self.stale_after).held(self.stop):
                    layerfs = store.layer_path(parse_digest(digest))
                    written += build_chain(self.base, chain_hex, parent, layerfs)
            parent = chain_hex
        return written

    def _write_manifest(self, manifest_digest: str, manifest: bytes, config: bytes) -> None:
        folder = ducc.metadata_dir(self.base, ducc.MANIFESTS_DIR, parse_digest(manifest_digest))
        os.makedirs(folder, exist_ok=True)
        for name, data in (("manifest.json", manifest), ("config.json", config)):
            if not os.path.isfile(os.path.join(folder, name)):  # content-addressed: never changes
                write_atomically(os.path.join(folder, name), data)

    def _recorded(self, reference: str, platform: str, manifest_digest: str) -> bool:
        """Whether a complete record of this very manifest exists (it already protects the layers)."""
        path = os.path.join(ducc.metadata_dir(self.base, ducc.IMAGE_RECORDS_DIR), f"{record_key(reference, platform)}.json")
        try:
            with open(path, "rb") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and record.get("complete") is True \
            and record.get("manifest_digest") == manifest_digest

    def _write_record(self, reference: str, platform: str, manifest_digest: str, layers: list[str],
                      chains: list[str], complete: bool) -> None:
        """Written before the layers too: a GC running meanwhile sees them referenced."""
        folder = ducc.metadata_dir(self.base, ducc.IMAGE_RECORDS_DIR)
        os.makedirs(folder, exist_ok=True)
        record = {"reference": reference, "platform": platform, "manifest_digest": manifest_digest,
                  "layers": layers, "chains": chains, "last_published": time.time(), "complete": complete}
        write_atomically(os.path.join(folder, f"{record_key(reference, platform)}.json"),
                          json.dumps(record, sort_keys=True, indent=1).encode())


def reason_of(error: BaseException) -> str:
    """What went wrong, as an operator reads it: the message, without Python's class names or
    `[Errno N]` prefixes (a class name only when the error says nothing else)."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {os.fsdecode(error.filename)}" if error.filename else "")
    else:
        text = _ERRNO_PREFIX.sub("", str(error))
    return (text or type(error).__name__)[:500]


_ERRNO_PREFIX = re.compile(r"\[Errno -?\d+\] ")
