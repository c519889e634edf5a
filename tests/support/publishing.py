"""One image published the way `cvmfs-snapshotter publish` does it (SitePublisher: a lock file
per layer, only that layer's own leftovers removed), for tests that want a layout or a refusal.

What the image failed with is raised, so a test asserts a refusal's class and message as it
would for a direct call, and a layout fixture cannot go on half-published.
"""

from __future__ import annotations

import os

from snapmux.adapters.cvmfs.recipe import Wanted
from snapmux.adapters.cvmfs.site_publish import ImageResult, SitePublisher


def publish_or_raise(target: str | os.PathLike, reference: str) -> ImageResult:
    """`reference` as the command takes it: `oci:DIR:TAG`, `oci-archive:FILE:TAG` or a registry's."""
    (result,) = SitePublisher(os.fspath(target)).run([Wanted(reference)]).images
    if result.exception is not None:
        raise result.exception
    assert not result.error, result.error
    return result
