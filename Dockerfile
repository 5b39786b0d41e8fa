# metallb-rs images. One build stage compiles every binary; one small final stage per binary
# keeps MetalLB's image contract: the `controller` image's entrypoint is /controller and the
# `speaker` image's is /speaker, so a user
# swaps only the image in MetalLB 0.9-0.12 manifests or Helm values (the args they pass,
# `--port=7472 --config=config`, are accepted as they are).
#
#   docker build --target controller -t metallb-rs/controller .
#   docker build --target speaker    -t metallb-rs/speaker .
#   docker build --target migrate    -t metallb-rs/metallb-migrate .
#
# The Rust version matches the toolchain the project is developed and tested with.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src/bin && echo 'fn main() {}' > src/bin/controller.rs \
    && echo 'fn main() {}' > src/bin/metallb-migrate.rs \
    && echo 'fn main() {}' > src/bin/speaker.rs && touch src/lib.rs \
    && cargo build --release --locked --bins \
    && rm -rf src
COPY src ./src
RUN touch src/lib.rs && cargo build --release --locked --bins \
    && mkdir -p /out && cp target/release/controller target/release/speaker target/release/metallb-migrate /out/

# glibc + libgcc only (rustls/ring need no OpenSSL), non-root by default.
FROM gcr.io/distroless/cc-debian12:nonroot AS controller
COPY --from=build /out/controller /controller
USER 65534:65534
EXPOSE 7472
ENTRYPOINT ["/controller"]

# The speaker needs CAP_NET_RAW for its AF_PACKET sockets; it runs as root (uid 0) so the
# capability granted by the pod spec is effective without file capabilities, and nothing else is
# granted (the manifests drop ALL and add NET_RAW).
FROM gcr.io/distroless/cc-debian12 AS speaker
COPY --from=build /out/speaker /speaker
EXPOSE 7472 7946/udp
ENTRYPOINT ["/speaker"]

FROM gcr.io/distroless/cc-debian12:nonroot AS migrate
COPY --from=build /out/metallb-migrate /metallb-migrate
USER 65534:65534
ENTRYPOINT ["/metallb-migrate"]
