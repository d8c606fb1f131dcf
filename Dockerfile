# The runner binary in a small Debian image. Tasks commonly need a shell and
# the usual tools, so the runtime image is debian:bookworm-slim rather than
# distroless; add what your tasks need in a derived image.
#
#   docker build -t lockpool/runner .
#   docker run --rm --init -v "$PWD/runner.yaml:/etc/runner/config.yaml:ro" lockpool/runner
#
# (--init reaps what is orphaned to PID 1: the runner does not act as init.
# Its exec supervisor reaps what tasks orphan, but if the supervisor itself
# dies, its children are reparented to PID 1.)

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so editing the source does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/runner ./cmd/runner

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/runner --shell /usr/sbin/nologin runner
COPY --from=build /out/runner /usr/local/bin/runner
USER runner
WORKDIR /home/runner
ENTRYPOINT ["runner"]
CMD ["run", "-c", "/etc/runner/config.yaml"]
