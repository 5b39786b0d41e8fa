#!/usr/bin/env bash
# Build (once) the real control-plane binaries the test harness runs:
#   kube-apiserver + kubectl  from the published k8s.io/kubernetes module at $K8S_VERSION
#   etcd                      from go.etcd.io/etcd/server/v3 at the version that release pins
#
# Binaries are cached by version under
#   ${XDG_CACHE_HOME:-$HOME/.cache}/metallb-rs/k8s-$K8S_VERSION/bin
# and a second run costs nothing. The last line on stdout is always that bin directory;
# everything else (progress) goes to stderr, so `BIN=$(tests/harness/build.sh)` works.
#
# Only the Go module proxy is contacted (through the ordinary `go` client).
#
# `go install pkg@version` refuses modules with `replace` directives, and k8s.io/kubernetes
# replaces every staging module (k8s.io/api, k8s.io/client-go, ...) with a local directory.
# So we build from a small wrapper module that requires k8s.io/kubernetes and replaces each
# staging module listed in that release's own go.mod with its published v0.Y.Z tag. The list
# is read from the downloaded go.mod, never guessed. etcd gets the same treatment for its
# `go.etcd.io/etcd/* => ../*` replaces.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/metallb-rs"
ROOT="$CACHE_ROOT/k8s-$K8S_VERSION"
BIN="$ROOT/bin"
STAMP="$BIN/.complete"

log() { printf '[harness/build] %s\n' "$*" >&2; }
die() {
	printf '[harness/build] error: %s\n' "$*" >&2
	exit 1
}

if [[ ! "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
	die "K8S_VERSION must look like v1.Y.Z, got '$K8S_VERSION'"
fi
# Staging modules are tagged v0.Y.Z for Kubernetes v1.Y.Z.
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
K8S_MINOR="${BASH_REMATCH[1]}"

have_all() {
	[[ -f "$STAMP" && -x "$BIN/kube-apiserver" && -x "$BIN/kubectl" && -x "$BIN/etcd" ]]
}

# Fast path: nothing to do, no lock, no go invocation.
if have_all; then
	log "using cached binaries ($(cat "$STAMP"))"
	printf '%s\n' "$BIN"
	exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not installed (needed to build kube-apiserver/etcd)"

mkdir -p "$ROOT"
# Serialise concurrent builds (several test binaries may call us at once).
exec 9>"$ROOT/.lock"
if ! flock -n 9; then
	log "another build is running; waiting for its lock ($ROOT/.lock)"
	flock 9
fi
if have_all; then
	log "using cached binaries ($(cat "$STAMP"))"
	printf '%s\n' "$BIN"
	exit 0
fi

export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false -mod=mod"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
START=$(date +%s)
LOGDIR="$ROOT/logs"
mkdir -p "$LOGDIR"

# Run a `go build -v` with its full output in a log file, printing a progress line every
# 50 compiled packages and the tail of the log if it fails.
go_build_with_progress() {
	local what=$1 logfile=$2
	shift 2
	log "building $what (log: $logfile)"
	local rc=0 n=0 t0 line
	t0=$(date +%s)
	{ go build -v "$@" 2>&1 || echo "GO_BUILD_FAILED rc=$?"; } | tee "$logfile" |
		while IFS= read -r line; do
			[[ "$line" == GO_BUILD_FAILED* ]] && continue
			n=$((n + 1))
			if ((n % 50 == 0)); then
				log "  $what: $n packages compiled ($(($(date +%s) - t0))s)"
			fi
		done || rc=$?
	if grep -q '^GO_BUILD_FAILED' "$logfile" || [[ $rc -ne 0 ]]; then
		log "go build for $what failed; last lines of $logfile:"
		tail -n 40 "$logfile" >&2
		exit 1
	fi
}

# Print the modules of go.mod $1 that its replace directives point at local directories
# ("=> ./x" or "=> ../x"). With a second argument "required", print only those the go.mod also
# requires: etcd's server go.mod "replaces" go.etcd.io/etcd and go.etcd.io/tests/v3 with
# ./FORBIDDEN_DEPENDENCY as a guard, and those modules have no v3.Y.Z tag to point at.
local_replaces() {
	awk -v only_required="${2:-}" '
		/^require[ \t]*\(/ { inreq = 1; next }
		inreq && /^\)/ { inreq = 0; next }
		inreq && NF >= 2 { required[$1] = 1 }
		/^require[ \t]/ && $2 != "(" { required[$2] = 1 }
		/^replace[ \t]*\(/ { inrep = 1; next }
		inrep && /^\)/ { inrep = 0; next }
		inrep && $2 == "=>" && $3 ~ /^\.\.?\// { repl[++n] = $1 }
		/^replace[ \t]/ && $3 == "=>" && $4 ~ /^\.\.?\// { repl[++n] = $2 }
		END {
			for (i = 1; i <= n; i++)
				if (only_required == "" || (repl[i] in required)) print repl[i]
		}
	' "$1"
}

# The go.mod of a module version, downloaded through the proxy.
download_gomod() {
	local mod=$1
	go mod download -json "$mod" | awk -F'"' '$2 == "GoMod" { print $4 }'
}

# ---------------------------------------------------------------- kube-apiserver + kubectl
K8S_GOMOD=$(download_gomod "k8s.io/kubernetes@$K8S_VERSION") ||
	die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
[[ -f "$K8S_GOMOD" ]] || die "go mod download did not report a go.mod for k8s.io/kubernetes@$K8S_VERSION"

mapfile -t STAGING < <(local_replaces "$K8S_GOMOD")
[[ ${#STAGING[@]} -gt 0 ]] || die "found no staging replaces in $K8S_GOMOD"
GO_LINE=$(awk '$1 == "go" { print; exit }' "$K8S_GOMOD")
GODEBUG_LINES=$(awk '$1 == "godebug" { print }' "$K8S_GOMOD")
ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$K8S_GOMOD")
[[ -n "$ETCD_VERSION" ]] || die "k8s.io/kubernetes@$K8S_VERSION does not pin go.etcd.io/etcd/server/v3"
log "k8s.io/kubernetes $K8S_VERSION: ${#STAGING[@]} staging modules at $STAGING_VERSION, etcd $ETCD_VERSION"

KW="$ROOT/src/kubernetes"
rm -rf "$KW"
mkdir -p "$KW"
{
	echo "// Generated by tests/harness/build.sh: wrapper module to build kube-apiserver and kubectl."
	echo "module metallb-rs.local/k8s-wrapper"
	echo
	echo "$GO_LINE"
	echo
	[[ -n "$GODEBUG_LINES" ]] && printf '%s\n\n' "$GODEBUG_LINES"
	echo "require k8s.io/kubernetes $K8S_VERSION"
	echo
	echo "replace ("
	for m in "${STAGING[@]}"; do
		printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"
	done
	echo ")"
} >"$KW/go.mod"

OUT="$ROOT/bin.tmp"
rm -rf "$OUT"
mkdir -p "$OUT"

# Version stamps, as the Kubernetes Makefile sets them (hack/lib/version.sh); the apiserver's
# /version and its emulation/compatibility version derive from these.
VPKGS=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
LDFLAGS="-s -w"
for p in "${VPKGS[@]}"; do
	LDFLAGS+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
	LDFLAGS+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

(
	cd "$KW"
	go_build_with_progress "kube-apiserver+kubectl" "$LOGDIR/kubernetes.log" \
		-ldflags="$LDFLAGS" -o "$OUT/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
)

# ---------------------------------------------------------------- etcd
ETCD_GOMOD=$(download_gomod "go.etcd.io/etcd/server/v3@$ETCD_VERSION") ||
	die "could not download go.etcd.io/etcd/server/v3@$ETCD_VERSION"
mapfile -t ETCD_REPL < <(local_replaces "$ETCD_GOMOD" required)
ETCD_GO_LINE=$(awk '$1 == "go" { print; exit }' "$ETCD_GOMOD")

EW="$ROOT/src/etcd"
rm -rf "$EW"
mkdir -p "$EW"
{
	echo "// Generated by tests/harness/build.sh: wrapper module to build the etcd server."
	echo "module metallb-rs.local/etcd-wrapper"
	echo
	echo "$ETCD_GO_LINE"
	echo
	echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
	if [[ ${#ETCD_REPL[@]} -gt 0 ]]; then
		echo
		echo "replace ("
		for m in "${ETCD_REPL[@]}"; do
			printf '\t%s => %s %s\n' "$m" "$m" "$ETCD_VERSION"
		done
		echo ")"
	fi
} >"$EW/go.mod"

(
	cd "$EW"
	go_build_with_progress "etcd" "$LOGDIR/etcd.log" \
		-ldflags="-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
)

for b in kube-apiserver kubectl etcd; do
	[[ -x "$OUT/$b" ]] || die "build finished but $OUT/$b is missing"
done
"$OUT/etcd" --version >&2 || die "built etcd does not run"
"$OUT/kube-apiserver" --version >&2 || die "built kube-apiserver does not run"

printf 'kubernetes=%s etcd=%s built=%s seconds=%s\n' "$K8S_VERSION" "$ETCD_VERSION" \
	"$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(($(date +%s) - START))" >"$OUT/.complete"
rm -rf "$BIN"
mv "$OUT" "$BIN"
log "built in $(($(date +%s) - START))s: $(cat "$STAMP")"
printf '%s\n' "$BIN"
