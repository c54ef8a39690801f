# registry-sync container image: a release build on Debian, run from a distroless,
# non-root runtime image (glibc, CA certificates, nothing else).
#   docker build -t registry-sync .
FROM rust:1.95-slim-bookworm AS build
# etcd-client generates its gRPC code at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin registry-sync \
 && cp target/release/registry-sync /registry-sync

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /registry-sync /usr/local/bin/registry-sync
USER nonroot:nonroot
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/registry-sync"]
CMD ["run", "--config", "/etc/registry-sync/sync.yaml"]
