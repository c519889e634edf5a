#!/bin/sh
# Builds the hot-path bench's Go programs from Debian's Go packages (GOPATH mode,
# no network): golang-go and golang-github-containerd-containerd-dev.
#   loadclient     - N concurrent clients of one operation via containerd's snapshots/proxy client
#   refsnapshotter - containerd's overlayfs behind contrib/snapshotservice (the Go reference)
# Output: <repo>/.cache/bench-go/<hash>/{loadclient,refsnapshotter}, keyed by the sources'
# hash, so an edited source is rebuilt and an unchanged one is not. Prints the folder.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
hash=$(cat "$here"/build.sh "$here"/*/main.go | sha256sum | cut -c1-12)
out="$repo/.cache/bench-go/$hash"
if [ -x "$out/loadclient" ] && [ -x "$out/refsnapshotter" ]; then
  echo "$out"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/src/snapmuxbench"
cp -r "$here/loadclient" "$here/refsnapshotter" "$work/src/snapmuxbench/"
export GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOCACHE="${GOCACHE:-$repo/.cache/gocache}" GOFLAGS=
for program in loadclient refsnapshotter; do
  (cd "$work/src/snapmuxbench/$program" && go build -o "$out/$program.partial" . && mv "$out/$program.partial" "$out/$program") >&2
done
echo "$out"
