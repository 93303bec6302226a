# The Petrel relay as a container image.
#
#   docker build -t petrel-relay .
#   docker run -d --name petrel-relay -p 5223:5223 -v petrel-relay-data:/data \
#     -e PETREL_RELAY_ANNOUNCE=tcp/relay.example.org:5223 petrel-relay
#   docker logs petrel-relay          # shows `relay address: petrel://...`
#
# The relay's identity key and store live in /data: keep that volume, or the relay gets a
# new key and every client that pinned its address stops trusting it. See deploy/README.md.

# --- build -------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest, and Cargo.lock pins versions.
COPY . .
RUN cargo build --release -p petrel-relay --locked \
 && install -D -m 0755 target/release/petrel-relay /out/petrel-relay

# --- run ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
# A fixed numeric user: volume drivers and platforms (Fly.io mounts a volume for the
# image's user) see a number, and "runs as non-root" checks can verify it.
RUN groupadd --system --gid 10001 petrel \
 && useradd --system --uid 10001 --gid petrel --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin petrel \
 && mkdir -p /data \
 && chown petrel:petrel /data \
 && chmod 0700 /data
COPY --from=build /out/petrel-relay /usr/local/bin/petrel-relay

ENV PETREL_RELAY_DATA=/data
# A new named volume starts as a copy of this directory, so it is owned by the relay user.
VOLUME ["/data"]
# Clients connect over TCP here. On a PaaS, $PORT (WebSocket, /health, /metrics) is
# published by the platform instead.
EXPOSE 5223
USER 10001:10001
# The relay drains on SIGTERM (Docker's default stop signal) and then exits.
ENTRYPOINT ["petrel-relay"]
