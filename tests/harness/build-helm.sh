#!/usr/bin/env bash
# Build (once) Helm v3 from the Go module proxy, for the chart tests and the drop-in proofs
# (tests/deploy.rs renders MetalLB's own chart and ours with `helm template` / `helm lint`).
#
#   helm.sh/helm/v3@$HELM_VERSION  ->  ${XDG_CACHE_HOME:-~/.cache}/metallb-rs/helm-$HELM_VERSION/bin/helm
#
# The last line on stdout is that bin directory (`BIN=$(tests/harness/build-helm.sh)`);
# progress goes to stderr. Only the Go module proxy is contacted (through the `go` client).
# helm.sh/helm/v3 has no `replace` directives, so `go install pkg@version` builds it as
# released; the version stamps are the ones Helm's own Makefile sets.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/metallb-rs/helm-$HELM_VERSION"
BIN="$ROOT/bin"
STAMP="$BIN/.complete"

log() { printf '[harness/build-helm] %s\n' "$*" >&2; }
die() {
	printf '[harness/build-helm] error: %s\n' "$*" >&2
	exit 1
}

[[ "$HELM_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION must look like v3.Y.Z, got '$HELM_VERSION'"

have_all() { [[ -f "$STAMP" && -x "$BIN/helm" ]]; }

# Fast path: nothing to do, no lock, no go invocation.
if have_all; then
	log "using cached helm ($(cat "$STAMP"))"
	printf '%s\n' "$BIN"
	exit 0
fi
command -v go >/dev/null 2>&1 || die "go is not installed (needed to build helm)"
mkdir -p "$ROOT"
# Serialise concurrent builds (several test binaries may call us at once).
exec 9>"$ROOT/.lock"
if ! flock -n 9; then
	log "another build is running; waiting for its lock ($ROOT/.lock)"
	flock 9
fi
if have_all; then
	log "using cached helm ($(cat "$STAMP"))"
	printf '%s\n' "$BIN"
	exit 0
fi

START=$(date +%s)
GOMOD=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | awk -F'"' '$2 == "GoMod" { print $4 }') ||
	die "could not download helm.sh/helm/v3@$HELM_VERSION from the Go module proxy"
[[ -f "$GOMOD" ]] || die "go mod download reported no go.mod for helm.sh/helm/v3@$HELM_VERSION"
if grep -qE '^replace' "$GOMOD"; then
	die "helm.sh/helm/v3@$HELM_VERSION has replace directives; go install cannot build it"
fi
# The Kubernetes version Helm reports as its default capabilities (`.Capabilities.KubeVersion`
# in `helm template`): that of the client-go it is built with, as Helm's Makefile derives it.
CLIENT_GO=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$GOMOD")
[[ "$CLIENT_GO" =~ ^v0\.([0-9]+)\.[0-9]+$ ]] || die "unexpected k8s.io/client-go version '$CLIENT_GO' in $GOMOD"
K8S_MINOR="${BASH_REMATCH[1]}"

LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	LDFLAGS+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$K8S_MINOR"
done

TMP=$(mktemp -d "$ROOT/bin.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
log "building helm $HELM_VERSION (first time: a few minutes; log: $ROOT/build.log)"
if ! CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="-trimpath -buildvcs=false" GOBIN="$TMP" \
	go install -ldflags="$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$ROOT/build.log" 2>&1; then
	tail -n 40 "$ROOT/build.log" >&2
	die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"
fi
[[ -x "$TMP/helm" ]] || die "build finished but $TMP/helm is missing"
"$TMP/helm" version --short >&2 || die "built helm does not run"
printf 'helm=%s kubernetes=1.%s built=%s seconds=%s %s\n' "$HELM_VERSION" "$K8S_MINOR" \
	"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(($(date +%s) - START))" "$(go version)" >"$TMP/.complete"
rm -rf "$BIN"
mv "$TMP" "$BIN"
trap - EXIT
log "built in $(($(date +%s) - START))s: $(cat "$STAMP")"
printf '%s\n' "$BIN"
