# syntax=docker/dockerfile:1
# The `proxy` image: one binary, run as a node (the default command) or as the scheduler.
# Build:  docker build -t proxy .
# Running a node and a scheduler: README, "Running a mesh" > "Installing" > "Docker".

# The toolchain CI uses (Cargo.toml's rust-version is the oldest that builds).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Caches keep the registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin proxy \
    && install -D -m 0755 target/release/proxy /out/usr/bin/proxy \
    && install -d -m 0750 /out/etc/proxy /out/var/lib/proxy

# glibc and libgcc (the binary links both) and a `nonroot` user (uid 65532); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/usr/bin/proxy /usr/bin/proxy
# Owned by the user the image runs as, so a named volume mounted there starts writable.
COPY --from=builder --chown=65532:65532 /out/etc/proxy /etc/proxy
COPY --from=builder --chown=65532:65532 /out/var/lib/proxy /var/lib/proxy
USER 65532:65532
# What the node rewrites (its renewed certificate, mesh.data_dir) and, for the
# scheduler, its registry.
VOLUME ["/var/lib/proxy"]
# 7800: peer links, QUIC on UDP and TLS on TCP (mesh.bind, mesh.tcp_bind).
# 7900/udp: the scheduler (bind) and `mesh join`.
# 9900, 9901: the scheduler's and the node's admin API (loopback unless configured).
EXPOSE 7800/udp 7800/tcp 7900/udp 9900/tcp 9901/tcp
ENTRYPOINT ["/usr/bin/proxy"]
CMD ["run", "-c", "/etc/proxy/config.yaml"]
