"""`cvmfs-snapshotter publish`: write an image's layers into the unpacked.cern.ch layout.

    cvmfs-snapshotter publish --target /srv/layers oci:/path/to/layout:tag
    cvmfs-snapshotter publish --target /srv/layers oci-archive:/path/image.tar:tag
    cvmfs-snapshotter publish --target /srv/layers --plain-http 127.0.0.1:5000/repo:tag
    cvmfs-snapshotter publish --target /srv/layers --authfile auth.json registry.example/private/app:1

The target is any directory the snapshotter's `absolute-mountpoint` will point at (a
CVMFS publisher's transaction, NFS, a local disk). Safe to re-run and to interrupt.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.oci import ImageSource, open_source
from snapmux.adapters.cvmfs.publish import LayoutPublisher, PublishReport
from snapmux.adapters.cvmfs.registry_auth import default_authfile


def publish_image(source: ImageSource, publisher: LayoutPublisher) -> PublishReport:
    image = source.image()
    with publisher.session() as report:
        for digest in image.layers:
            publisher.publish_layer(digest, source.open_blob, report)
        publisher.write_metadata(image.manifest_digest, image.manifest, image.config)
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvmfs-snapshotter publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or [HOST/]REPO[:TAG|@DIGEST], "
                        "named as docker does (busybox: registry-1.docker.io/library/busybox:latest)")
    parser.add_argument("--target", required=True, help="root of the layout (gets .layers/<xx>/<hex>/layerfs)")
    parser.add_argument("--plain-http", action="store_true", help="talk to the registry over http")
    parser.add_argument("--authfile", default=default_authfile(),
                        help="registry credentials, containers/docker auth.json format (default: $REGISTRY_AUTH_FILE, "
                             "else ~/.docker/config.json if present; none: anonymous)")
    parser.add_argument("--max-layer-bytes", type=_positive, default=LayerLimits.max_bytes,
                        help="refuse a layer whose files add up to more (default: %(default)s, 128 GiB)")
    parser.add_argument("--max-layer-entries", type=_positive, default=LayerLimits.max_entries,
                        help="refuse a layer with more entries (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    target = os.path.abspath(args.target)
    try:
        source = open_source(args.image, os.path.join(target, ".layers"), args.plain_http, args.authfile)
        limits = LayerLimits(max_bytes=args.max_layer_bytes, max_entries=args.max_layer_entries)
        report = publish_image(source, LayoutPublisher(target, limits))
    except Exception as error:  # noqa: BLE001 - bad tars, registries, json: a message, not a trace
        print(f"publish failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"published {len(report.written)} layer(s), skipped {len(report.skipped)} already present"
          f" into {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
