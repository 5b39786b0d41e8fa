#!/usr/bin/env bash
# Build (once) MetalLB's own speaker and controller from the Go module proxy, to compare
# with them in benchmarks (upstream as a peer; nothing of MetalLB is copied into this repo).
#
#   go.universe.tf/metallb@$METALLB_VERSION  ->  ${XDG_CACHE_HOME:-~/.cache}/metallb-rs/metallb-$METALLB_VERSION/bin
#
# The last line on stdout is that bin directory (`BIN=$(tests/harness/build-metallb.sh)`).
# The module pins k8s.io/* with `replace` lines, which Go ignores for a dependency, so we
# build inside a writable copy of the downloaded module (`-mod=mod`).
set -euo pipefail

METALLB_VERSION="${METALLB_VERSION:-v0.12.1}"
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/metallb-rs/metallb-$METALLB_VERSION"
BIN="$ROOT/bin"
STAMP="$BIN/.complete"

log() { printf '[harness/build-metallb] %s\n' "$*" >&2; }

if [[ -f "$STAMP" && -x "$BIN/speaker" && -x "$BIN/controller" ]]; then
	log "using cached binaries ($(cat "$STAMP"))"
	printf '%s\n' "$BIN"
	exit 0
fi
command -v go >/dev/null 2>&1 || { log "error: go is not installed"; exit 1; }
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
if [[ -f "$STAMP" ]]; then
	printf '%s\n' "$BIN"
	exit 0
fi
log "downloading go.universe.tf/metallb@$METALLB_VERSION"
MOD=$(go mod download -json "go.universe.tf/metallb@$METALLB_VERSION" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
SRC=$(mktemp -d "$ROOT/src.XXXXXX")
trap 'rm -rf "$SRC"' EXIT
cp -r "$MOD/." "$SRC"
chmod -R u+w "$SRC"
TMP=$(mktemp -d "$ROOT/bin.XXXXXX")
for b in controller speaker; do
	log "building $b (first time: about a minute)"
	(cd "$SRC" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$TMP/$b" "./$b")
done
printf 'metallb %s, %s\n' "$METALLB_VERSION" "$(go version)" >"$TMP/.complete"
rm -rf "$BIN"
mv "$TMP" "$BIN"
log "built into $BIN"
printf '%s\n' "$BIN"
