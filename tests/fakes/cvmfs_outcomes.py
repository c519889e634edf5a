"""A spy under CvmfsSnapshotter: what it did with each layer, read from the calls it passes down.

`remote`: an adoption that took (or that a concurrent unpack made first), which CvmfsSnapshotter
answers with AlreadyExists. `fallback`: a Prepare with the ref and digest labels passed on, so
the layer is unpacked locally. The daemon counts neither (its metrics count foreign-layer
outcomes); tests use these to check which path a layer took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapmux.adapters.cvmfs.layers import digest_from_labels
from snapmux.domain.errors import AlreadyExistsError
from snapmux.domain.labels import REF_LABEL


@dataclass
class Outcomes:
    remote: int = 0
    fallback: int = 0


class OutcomeSpy:
    """Passes every call to `inner` (an AdoptingSnapshotService) unchanged."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.counters = Outcomes()
        self.events: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _event(self, event: str) -> None:
        setattr(self.counters, event, getattr(self.counters, event) + 1)
        self.events.append(event)

    async def prepare(self, key, parent="", labels=None):
        if (labels or {}).get(REF_LABEL) and digest_from_labels(labels):
            self._event("fallback")
        return await self._inner.prepare(key, parent, labels)

    async def adopt(self, name, parent, labels, source, shadows="", flattened=False):
        try:
            info = await self._inner.adopt(name, parent, labels, source, shadows, flattened=flattened)
        except AlreadyExistsError:
            self._event("remote")
            raise
        self._event("remote")
        return info
