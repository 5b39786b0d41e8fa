# syntax=docker/dockerfile:1
# metallb-rs images. One build stage compiles every binary; one small final stage per binary
# keeps MetalLB's image contract: the `controller` image's entrypoint is /controller and the
# `speaker` image's is /speaker, so a user swaps only the image in MetalLB 0.9-0.12 manifests
# or Helm values (the args they pass, `--port=7472 --config=config`, are accepted as they are).
#
#   docker build --target controller -t metallb-rs/controller:0.1.0 .
#   docker build --target speaker    -t metallb-rs/speaker:0.1.0 .
#   docker build --target migrate    -t metallb-rs/metallb-migrate:0.1.0 .
#
# Reproducible from Cargo.lock: the dependencies are fetched in their own layer
# (`cargo fetch --locked`, the only step that downloads crates); the build itself runs
# `--locked --offline`, with paths remapped and no incremental state. Pin the base images by
# digest (`rust:1.95-bookworm@sha256:...`) for bit-for-bit rebuilds.

FROM docker.io/library/rust:1.95-bookworm AS build
# setcap, for the speaker's file capability (the only package the build installs).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "libcap2-bin=1:2.66-4+deb12u*" \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV CARGO_INCREMENTAL=0 \
    RUSTFLAGS="--remap-path-prefix=/src=. --remap-path-prefix=/usr/local/cargo=cargo"
# Dependencies first, so source edits do not fetch or rebuild them. Cargo.toml names the
# benches, so they must exist for the manifest to load.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src/bin && echo 'fn main() {}' > src/bin/controller.rs \
    && echo 'fn main() {}' > src/bin/metallb-migrate.rs \
    && echo 'fn main() {}' > src/bin/speaker.rs && touch src/lib.rs \
    && cargo fetch --locked \
    && cargo build --release --locked --offline --bins \
    && rm -rf src
COPY src ./src
RUN touch src/lib.rs && cargo build --release --locked --offline --bins \
    && mkdir -p /out \
    && cp target/release/controller target/release/speaker target/release/metallb-migrate /out/ \
    && setcap cap_net_raw+ep /out/speaker

# glibc + libgcc only (rustls/ring need no OpenSSL), non-root, read-only friendly (writes
# nothing to its filesystem: run it with readOnlyRootFilesystem: true).
FROM gcr.io/distroless/cc-debian12:nonroot AS controller
COPY --from=build /out/controller /controller
USER 65534:65534
EXPOSE 7472
ENTRYPOINT ["/controller"]

# The speaker needs CAP_NET_RAW (AF_PACKET sockets for ARP/NDP) and nothing else. The pod's
# securityContext grants it (`capabilities: {drop: [ALL], add: [NET_RAW]}`, as MetalLB's
# manifests and chart do); the image cannot. Two ways to run it:
# - as root (the default user here, and what MetalLB's own manifests expect: they set no
#   runAsUser and allowPrivilegeEscalation: false): root keeps the granted NET_RAW, nothing else;
# - as non-root (our chart and manifest: runAsUser 65534): Kubernetes grants no ambient
#   capabilities, so a non-root process gets NET_RAW only from the file capability set on
#   /speaker below, which needs allowPrivilegeEscalation: true (no_new_privs refuses file
#   capabilities) and NET_RAW in the container's capabilities.
# The file capability travels with COPY --from under BuildKit (extended attributes kept).
# distroless names its root variant only `latest`; pin it by digest for reproducible images.
# hadolint ignore=DL3007
FROM gcr.io/distroless/cc-debian12:latest AS speaker
COPY --from=build /out/speaker /speaker
EXPOSE 7472 7946/udp
ENTRYPOINT ["/speaker"]

FROM gcr.io/distroless/cc-debian12:nonroot AS migrate
COPY --from=build /out/metallb-migrate /metallb-migrate
USER 65534:65534
ENTRYPOINT ["/metallb-migrate"]
