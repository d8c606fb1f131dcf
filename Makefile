# Developer entry points. `make test` is the canonical test command (CI runs it
# via .ci/run). Tests need a real Redis; see internal/redistest.

# Fall back to the standard Go install location if `go` is not on PATH.
export PATH := $(PATH):/usr/local/go/bin

GO        ?= go
FUZZTIME  ?= 30s

.PHONY: all build test redis bench fuzz lint run

all: build

build:
	$(GO) build ./...
	$(GO) build -o bin/runner ./cmd/runner

# Ensures redis-server is on PATH (installing it with apt-get when root).
redis:
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "redis-server: $$(command -v redis-server) ($$(redis-server --version | head -n1))"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "redis-server not found; installing it with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	else \
		echo "redis-server is not on PATH and this is not root, so it cannot be installed automatically." >&2; \
		echo "Install it with: sudo apt-get install redis-server   (or: brew install redis)" >&2; \
		echo "Tests that use a shared Redis can also use REDIS_ADDR=host:port or Docker, but" >&2; \
		echo "tests that start their own server (redistest.StartServer) need redis-server." >&2; \
		exit 1; \
	fi

# go build first: examples have no tests, and must still compile.
test: redis
	$(GO) build ./...
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 10m ./...

bench: redis
	$(GO) test -run '^$$' -bench . -benchtime 2s ./pkg/lock ./pkg/allocator
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./pkg/worker

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDifferential -fuzztime $(FUZZTIME) ./pkg/lock

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then \
		echo "gofmt -l reports unformatted files:" >&2; echo "$$out" >&2; exit 1; \
	fi
	$(GO) vet ./...

# The main job: the runner on its embedded in-memory backend (no Redis),
# running the demo batch of config/example.yaml.
run:
	$(GO) build -o bin/runner ./cmd/runner
	./bin/runner run -c config/example.yaml
