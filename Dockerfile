# syntax=docker/dockerfile:1
# The `vigil` image: one static binary (musl), nothing else, running as a non-root user.
#
#   docker build -t vigil:0.1.0 .
#
# Builder: Rust on Alpine, whose native libc is musl, so the binary links statically
# (ring, mimalloc and zstd build their C parts with Alpine's gcc).
FROM docker.io/library/rust:1.95-alpine3.22 AS build
RUN apk add --no-cache musl-dev gcc g++ make perl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vigil \
    && cp target/release/vigil /vigil \
    && strip /vigil
# Fail the build if anything links dynamically.
RUN ! ldd /vigil 2>/dev/null | grep -q '=>'

# Runtime: distroless static (CA certificates, /etc/passwd with nonroot, no shell).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /vigil /usr/local/bin/vigil
USER 65532:65532
# HTTP ingest, syslog, syslog TLS, gRPC control plane, admin (health, readiness, metrics).
EXPOSE 8088 5514/udp 5514/tcp 6514 50051 9464
ENV VIGIL_DATA_DIR=/var/lib/vigil
ENTRYPOINT ["/usr/local/bin/vigil"]
CMD ["run"]
