#!/bin/sh
# Builds (once) a Go test binary of containerd's snapshotter suite and prints its path.
#
#   tests/conformance/build.sh            this directory's harness (conformance_test.go):
#                                         the suite against $SNAPSHOTTER_CMD, see that file
#   tests/conformance/build.sh builtin    containerd's own overlayfs snapshotter package tests:
#                                         the same suite, the baseline of what passes here
#
# Sources come from Debian (golang-go, golang-github-containerd-containerd-dev under
# /usr/share/gocode), built in GOPATH mode: no module download, nothing outside this
# repository but those packages. The binary is cached under <repo>/.cache/conformance/, named
# by a hash of everything it is built from (this script, the harness, containerd's suite and
# the Go toolchain), so any change rebuilds it and nothing else does.
#
# Exit status: 0 built (path on stdout), 3 a part is missing (named on stderr), else the build failed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
gocode=${SNAPMUX_GOCODE:-/usr/share/gocode}
containerd=$gocode/src/github.com/containerd/containerd
what=${1:-harness}

missing() { echo "conformance harness: missing $1" >&2; exit 3; }
command -v go >/dev/null 2>&1 || missing "go on PATH (Debian package golang-go)"
[ -d "$containerd/snapshots/testsuite" ] && [ -d "$containerd/snapshots/proxy" ] ||
  missing "containerd's Go sources in $containerd/snapshots/{testsuite,proxy} (Debian package golang-github-containerd-containerd-dev)"

case $what in
  harness) package=.; sources="$here/conformance_test.go" ;;
  builtin) package=github.com/containerd/containerd/snapshots/overlay; sources=$(ls "$containerd"/snapshots/overlay/*.go) ;;
  *) echo "usage: $0 [harness|builtin]" >&2; exit 2 ;;
esac

key=$({ go version; cat "$0" $sources "$containerd"/snapshots/testsuite/*.go "$containerd"/snapshots/proxy/*.go; } |
  sha256sum | cut -c1-16)
cache=$repo/.cache/conformance
binary=$cache/$what-$key.test
if [ ! -x "$binary" ]; then
  mkdir -p "$cache"
  partial=$cache/.$what-$key.$$
  trap 'rm -f "$partial"' EXIT
  # GOPATH mode: imports resolve in $gocode only; the harness builds from this directory as is.
  (cd "$here" && GO111MODULE=off GOPATH=$gocode GOFLAGS= GOCACHE=${GOCACHE:-$repo/.cache/gocache} \
    go test -c -o "$partial" "$package") >&2
  mv "$partial" "$binary"
fi
echo "$binary"
