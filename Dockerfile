# Multi-stage build of bergamotd; the runtime image runs as a non-root user.
#   docker build -t bergamotd .
#   docker run -p 8080:8080 bergamotd            # the demo, in memory
#   docker run -p 8080:8080 -v /etc/bergamot:/etc/bergamot:ro \
#     -e BERGAMOT_CONFIG=/etc/bergamot/bergamot.toml \
#     -e BERGAMOT_STORE=postgres://bergamot:secret@db:5432/bergamot \
#     -e BERGAMOT_QUEUE=amqp://bergamot:secret@mq:5672/%2f bergamotd
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo install --locked --path bergamot-daemon --root /out

FROM debian:bookworm-slim
# Nagios plugins are optional: add monitoring-plugins-basic here if checks use them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/bergamot --create-home \
      --shell /usr/sbin/nologin bergamot
COPY --from=build /out/bin/bergamotd /usr/local/bin/bergamotd
COPY --chown=root:root examples/demo.toml /etc/bergamot/demo.toml
COPY --chown=root:root examples/plugins /etc/bergamot/plugins
USER bergamot:bergamot
WORKDIR /var/lib/bergamot
ENV BERGAMOT_CONFIG=/etc/bergamot/demo.toml \
    BERGAMOT_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
# Health: GET /healthz on the web listener (the image has no HTTP client;
# let the orchestrator probe it).
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/bergamotd"]
CMD ["run"]
