#!/usr/bin/env python3
"""Publishing a recipe of images that share base layers: cold (empty target) and warm (all there).

Builds `--images` images (the whiteout base, `--shared-mb` of shared random data, `--extra`
small layers, and `--own-mb` of each image's own random data), pushes them to a private
docker-registry on 127.0.0.1, writes a recipe with a wildcard matching them all, then times
`cvmfs-snapshotter publish --recipe` (in-process: SitePublisher) side by side:

    cold, --jobs 1     into an empty target
    cold, --jobs N     into another empty target
    warm, --jobs N     again into the second one (nothing to fetch: one stat per layer)

and prints, for each, seconds, layers published/skipped, MB/s (compressed bytes fetched per
second of wall time) and layers/s (layers handled per second), plus the chain count and the
blob GETs the registry logged. Needs root (overlay whiteouts) and docker-registry, skopeo.

    sudo python3 bench/publish_bench.py [--images 4] [--shared-mb 40] [--own-mb 10] [--extra 8] [--jobs 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapmux.adapters.cvmfs.recipe import load_recipe  # noqa: E402
from snapmux.adapters.cvmfs.site_publish import SitePublisher  # noqa: E402
from tests.support.registry import Registry  # noqa: E402
from tests.support.site_images import complete_entries, family  # noqa: E402


def timed(target: Path, recipe: str, jobs: int, registry: Registry) -> dict:
    since = registry.mark()
    started = time.monotonic()
    summary = SitePublisher(str(target), jobs).run(load_recipe(recipe))
    seconds = time.monotonic() - started
    if summary.failed:
        raise SystemExit(f"publish failed: {[image.line() for image in summary.failed]}")
    published = sum(image.published for image in summary.images)
    skipped = sum(image.skipped for image in summary.images)
    size = sum(image.bytes for image in summary.images)
    gets = sum(1 for method, path, _ in registry.requests()[since:] if method == "GET" and "/blobs/" in path)
    return {"seconds": seconds, "published": published, "skipped": skipped, "mb": size / 2**20,
            "mb_s": size / 2**20 / seconds, "layers_s": (published + skipped) / seconds, "gets": gets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--shared-mb", type=float, default=40)
    parser.add_argument("--own-mb", type=float, default=10)
    parser.add_argument("--extra", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="publish-bench-") as work_dir:
        work = Path(work_dir)
        with Registry.start(work / "registry") as registry:
            names = [f"bench/app:{index}.0" for index in range(args.images)]
            built = family(str(work / "images"), names, args.shared_mb, args.own_mb, args.extra)
            for name, image in built.items():
                registry.push(image.layout, image.tag, name)
            recipe = work / "recipe.yaml"
            recipe.write_text(f"version: 1\ninput:\n  - 'http://{registry.host}/bench/app:*'\n")
            layers = len({layer.digest for image in built.values() for layer in image.layers})
            print(f"{args.images} images, {layers} distinct layers, "
                  f"{args.shared_mb + args.images * args.own_mb:.0f} MB of random data")
            rows = [("cold --jobs 1", timed(work / "serial", str(recipe), 1, registry)),
                    (f"cold --jobs {args.jobs}", timed(work / "target", str(recipe), args.jobs, registry)),
                    (f"warm --jobs {args.jobs}", timed(work / "target", str(recipe), args.jobs, registry))]
            print(f"{'run':<16}{'s':>8}{'published':>11}{'skipped':>9}{'MB':>8}{'MB/s':>8}{'layers/s':>10}"
                  f"{'blob GETs':>11}")
            for name, row in rows:
                print(f"{name:<16}{row['seconds']:>8.2f}{row['published']:>11}{row['skipped']:>9}{row['mb']:>8.1f}"
                      f"{row['mb_s']:>8.1f}{row['layers_s']:>10.1f}{row['gets']:>11}")
            print(f"chains written: {len(complete_entries(str(work / 'target'), '.chains'))}")
            print(f"parallel vs serial cold: {rows[0][1]['seconds'] / rows[1][1]['seconds']:.2f}x; "
                  f"warm vs cold: {rows[1][1]['seconds'] / rows[2][1]['seconds']:.1f}x faster")


if __name__ == "__main__":
    main()
