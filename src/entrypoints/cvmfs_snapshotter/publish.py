"""`cvmfs-snapshotter publish`: write images into the unpacked.cern.ch layout, as DUCC does.

    cvmfs-snapshotter publish --target /srv/layers oci:/path/to/layout:tag
    cvmfs-snapshotter publish --target /srv/layers oci-archive:/path/image.tar:tag
    cvmfs-snapshotter publish --target /srv/layers --plain-http 127.0.0.1:5000/repo:tag
    cvmfs-snapshotter publish --target /srv/layers --authfile auth.json registry.example/private/app:1
    cvmfs-snapshotter publish --target /srv/layers --recipe recipe.yaml --jobs 8 --loop --interval 10m --gc

The target is any directory the snapshotter's `absolute-mountpoint` will point at (a
CVMFS publisher's transaction, NFS, a local disk). Safe to re-run, to interrupt, and to
run on several hosts at once. Exit code 0 only when every image was published.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence

from snapmux.adapters.cvmfs.layer_entries import LayerLimits
from snapmux.adapters.cvmfs.oci import host_platform
from snapmux.adapters.cvmfs.publish_gc import collect
from snapmux.adapters.cvmfs.publish_progress import NoProgress, Progress, for_stream
from snapmux.adapters.cvmfs.recipe import Wanted, load_recipe
from snapmux.adapters.cvmfs.registry_auth import default_authfile
from snapmux.adapters.cvmfs.site_publish import SitePublisher, Summary, reason_of, record_key

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """`90`, `30s`, `10m`, `1h`, `7d` as seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 10m, 1h or 7d")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvmfs-snapshotter publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="*", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or [HOST/]REPO[:TAG|@DIGEST], "
                        "named as docker does (busybox: registry-1.docker.io/library/busybox:latest)")
    parser.add_argument("--target", required=True, help="root of the layout (gets .layers/<xx>/<hex>/layerfs)")
    parser.add_argument("--recipe", help="DUCC wishlist (version 1 YAML); tags may hold * wildcards")
    parser.add_argument("--platform", default=host_platform(),
                        help="os/arch[/variant] to take from multi-arch indexes, comma-separated (default: %(default)s)")
    parser.add_argument("--jobs", type=_positive, default=4, help="layers fetched at once (default: %(default)s)")
    parser.add_argument("--loop", action="store_true", help="re-resolve and publish every --interval until SIGTERM")
    parser.add_argument("--interval", type=duration, default=600.0, help="--loop period (default: 10m)")
    parser.add_argument("--gc", action="store_true",
                        help="after a pass with no failure, remove layers and chains no wanted image references")
    parser.add_argument("--gc-grace", type=duration, default=7 * 86400.0,
                        help="keep what was referenced less than this long ago (default: 7d)")
    parser.add_argument("--plain-http", action="store_true", help="talk to the registry over http")
    parser.add_argument("--authfile", default=default_authfile(),
                        help="registry credentials, containers/docker auth.json format (default: $REGISTRY_AUTH_FILE, "
                             "else ~/.docker/config.json if present; none: anonymous)")
    parser.add_argument("--max-layer-bytes", type=_positive, default=LayerLimits.max_bytes,
                        help="refuse a layer whose files add up to more (default: %(default)s, 128 GiB)")
    parser.add_argument("--max-layer-entries", type=_positive, default=LayerLimits.max_entries,
                        help="refuse a layer with more entries (default: %(default)s)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true", help="print nothing but failures (for scripts)")
    output.add_argument("--json", action="store_true",
                        help="no progress; one JSON summary object on stdout per pass (failures also on stderr)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _inputs(args: argparse.Namespace) -> list[Wanted]:
    wanted = load_recipe(args.recipe, args.plain_http) if args.recipe else []
    return wanted + [Wanted(spec.removeprefix("docker://"), args.plain_http) for spec in args.image]


def _one_pass(args: argparse.Namespace, publisher: SitePublisher, target: str) -> bool:
    """Publish (and collect); True when every image was published."""
    try:
        inputs = _inputs(args)
    except Exception as error:  # noqa: BLE001 - a bad recipe is a message, not a trace
        print(f"publish failed: {reason_of(error)}", file=sys.stderr)
        return False
    summary = publisher.run(inputs)
    _print(summary, target, args)
    if args.gc and not publisher.stop.is_set():
        _collect(args, summary, target)
    return not summary.failed


def _print(summary: Summary, target: str, args: argparse.Namespace) -> None:
    """Successes and the summary on stdout (for scripts), each failure one line on stderr, in
    every mode; --json replaces the stdout lines with one object, --quiet drops them."""
    for image in summary.images:
        if image.error:
            print(image.line(), file=sys.stderr)
        elif not (args.quiet or args.json):
            print(image.line())
    if args.json:
        print(json.dumps(as_json(summary, target)), flush=True)
    elif not args.quiet:
        print(summary.line(target))


def as_json(summary: Summary, target: str) -> dict:
    images = [{"reference": image.reference, "platform": image.platform, "published": image.published,
               "skipped": image.skipped, "bytes": image.bytes, "chains": image.chains,
               "seconds": round(image.seconds, 3), "error": image.error or None, "stopped": image.stopped}
              for image in summary.images]
    return {"target": target, "images": images, "totals": summary.totals()}


def _progress(args: argparse.Namespace) -> Progress:
    return NoProgress() if args.quiet or args.json else for_stream(sys.stderr)


def _notice(args: argparse.Namespace, line: str) -> None:
    """What is neither a failure nor the summary: stdout by default, stderr beside --json."""
    if not args.quiet:
        print(line, file=sys.stderr if args.json else sys.stdout)


def _collect(args: argparse.Namespace, summary: Summary, target: str) -> None:
    if summary.failed or summary.stopped:
        print(f"gc skipped: {len(summary.failed)} image(s) failed, their layers would look unreferenced",
              file=sys.stderr)
        return
    wanted = {record_key(image.reference, image.platform) for image in summary.images}
    try:
        _notice(args, collect(target, wanted, args.gc_grace).line())
    except Exception as error:  # noqa: BLE001
        print(f"gc failed: {reason_of(error)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.image and not args.recipe:
        print("publish: give image references, --recipe FILE, or both", file=sys.stderr)
        return 2
    target, stop = os.path.abspath(args.target), threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    limits = LayerLimits(max_bytes=args.max_layer_bytes, max_entries=args.max_layer_entries)
    publisher = SitePublisher(target, args.jobs, args.platform.split(","), args.authfile, stop, limits,
                              progress=_progress(args))
    ok = _one_pass(args, publisher, target)
    while args.loop and not stop.wait(args.interval):
        ok = _one_pass(args, publisher, target)
    if stop.is_set():
        _notice(args, "publish: stopped by SIGTERM after finishing the layers in progress")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
