# syntax=docker/dockerfile:1
# txguard's image: a release build in the Rust image, copied with the pipeline files, models
# and dashboards into a slim Debian runtime (no compiler, no sources; runs as a plain user).
#   docker build -t txguard .
#   docker run --rm -p 8787:8787 txguard        # the embedded default: generator -> Delta

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# librdkafka is built from source (make, perl for its configure) against the system OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make perl pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
# Cache the registry and the target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p txguard \
    && cp target/release/txguard /usr/local/bin/txguard

FROM debian:bookworm-slim
# OpenSSL for Kafka TLS/SASL, CA roots for TLS to brokers and object stores.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 txguard
COPY --from=build /usr/local/bin/txguard /usr/local/bin/txguard
COPY --chown=txguard sql /app/sql
COPY --chown=txguard models /app/models
COPY --chown=txguard dashboards /app/dashboards
USER txguard
WORKDIR /app
EXPOSE 8787
ENTRYPOINT ["txguard"]
CMD ["run", "--ui", "0.0.0.0:8787"]
