# Arbor: multi-stage build, slim non-root runtime, data on a volume.
# protoc comes from the protoc-bin-vendored crate, so the builder needs nothing extra.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
# The workspace names the benchmark crate; cargo needs its manifest and sources to load.
COPY bench/arbor-bench bench/arbor-bench
RUN cargo build --release --locked --bin arbor

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin arbor \
    && mkdir -p /data \
    && chown arbor /data
COPY --from=build /src/target/release/arbor /usr/local/bin/arbor
USER arbor
# Inside a container the server must listen on every interface, not loopback.
ENV ARBOR_LISTEN=0.0.0.0:5000 \
    ARBOR_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 5000
# SIGTERM (docker stop) finishes in-flight writes, flushes and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["arbor"]
CMD ["serve"]
