# Builds the natter binaries (natter, natter-gateway, natter-chat, natter-history) for
# compose.yaml.
# Not exercised on the project's build machines, which have no container engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p natter -p gateway -p chat -p history

FROM debian:bookworm-slim
COPY --from=build /src/target/release/natter /src/target/release/natter-gateway \
     /src/target/release/natter-chat /src/target/release/natter-history /usr/local/bin/
USER 65534
