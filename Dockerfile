# The agyn-admission image: one static-ish binary (glibc) on distroless,
# running as the non-root user 65532 the chart sets.
#   docker build -t ghcr.io/agynio/agyn-admission:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# webhook/build.rs compiles the built-in policies for this target.
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release --locked --bin agyn-admission \
 && cp target/release/agyn-admission /agyn-admission

# cc: glibc and libgcc, which the binary links; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /agyn-admission /usr/local/bin/agyn-admission
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/agyn-admission"]
CMD ["serve", "--help"]
