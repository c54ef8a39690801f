# registry-sync container image: a release build on Debian, run from a distroless,
# non-root runtime image (glibc, CA certificates, nothing else).
#   docker build -t registry-sync .
FROM rust:1.95-slim-bookworm AS build
# Nothing but the Rust toolchain: no protoc, no system libraries.
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
