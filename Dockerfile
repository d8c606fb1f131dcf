# The runner binary in a small Debian image. Tasks commonly need a shell and
# the usual tools, so the runtime image is debian:bookworm-slim rather than
# distroless; add what your tasks need in a derived image.
#
#   docker build -t lockpool/runner \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm --init -v "$PWD/runner.yaml:/etc/runner/config.yaml:ro" lockpool/runner
#
# (make docker does the same.) The HEALTHCHECK asks the runner's /healthz
# with "runner health", so the config must set admin.listen (e.g.
# "0.0.0.0:9090"); without it the container reports unhealthy.
#
# (--init reaps what is orphaned to PID 1: the runner does not act as init.
# Its exec supervisor reaps what tasks orphan, but if the supervisor itself
# dies, its children are reparented to PID 1.)

FROM golang:1.26-bookworm AS build
WORKDIR /src
ARG VERSION=""
ARG REVISION=""
# Only what the runner builds from: go build then downloads only the
# runner's modules (not those of tests and benchmarks, such as
# testcontainers), into a cache kept across builds.
COPY go.mod go.sum ./
COPY cmd/runner ./cmd/runner
COPY pkg ./pkg
COPY internal ./internal
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X main.buildVersion=${VERSION} -X main.buildRevision=${REVISION}" \
      -o /out/runner ./cmd/runner

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/runner --shell /usr/sbin/nologin runner
COPY --from=build /out/runner /usr/local/bin/runner
USER runner
WORKDIR /home/runner
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["runner", "health", "-c", "/etc/runner/config.yaml"]
ENTRYPOINT ["runner"]
CMD ["run", "-c", "/etc/runner/config.yaml"]
