# Builds the natter binaries (natter, natter-gateway, natter-chat, natter-history,
# natter-notifier) for compose.yaml. No container engine runs on the project's build
# machines; tests/tests/compose.rs checks that compose.yaml runs only binaries this file
# copies, builds the same packages and runs them as compose.yaml says.
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
# The NATS credentials' volume of compose.yaml: a new named volume takes this directory's
# owner, so `natter nats-auth` (as the user below) can write the seeds the services read.
RUN mkdir -p /etc/natter/nats-auth && chown 65534:65534 /etc/natter/nats-auth
USER 65534
