# Builds the natter binaries (natter, natter-gateway, natter-chat, natter-history,
# natter-notifier) for
# compose.yaml.
# Not exercised on the project's build machines, which have no container engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p natter -p gateway -p chat -p history -p notifier

FROM debian:bookworm-slim
# The notifier's webhook client trusts the system's root certificates.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/natter /src/target/release/natter-gateway \
     /src/target/release/natter-chat /src/target/release/natter-history \
     /src/target/release/natter-notifier /usr/local/bin/
USER 65534
