"""One image published the way `cvmfs-snapshotter publish` does it (SitePublisher: a lock file
per layer, only that layer's own leftovers removed), for tests that want a layout or a refusal.

`publish` answers the image's result; `publish_or_raise` raises what the image failed with, so a
test asserts the refusal's class and message as it would for a direct call.
"""

from __future__ import annotations

import os

from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.recipe import Wanted
from snapmux.adapters.cvmfs.site_publish import ImageResult, SitePublisher


def publish(target: str | os.PathLike, reference: str, limits: LayerLimits | None = None) -> ImageResult:
    """`reference` as the command takes it: `oci:DIR:TAG`, `oci-archive:FILE:TAG` or a registry's."""
    summary = SitePublisher(os.fspath(target), limits=limits).run([Wanted(reference)])
    (result,) = summary.images
    return result


def publish_or_raise(target: str | os.PathLike, reference: str, limits: LayerLimits | None = None) -> ImageResult:
    result = publish(target, reference, limits)
    if result.exception is not None:
        raise result.exception
    assert not result.error, result.error
    return result
