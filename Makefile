# Developer entry points. `make test` is the canonical test command (CI runs it
# via .ci/run). Tests need a real Redis; see internal/redistest.

# Fall back to the standard Go install location if `go` is not on PATH.
export PATH := $(PATH):/usr/local/go/bin

GO        ?= go
FUZZTIME  ?= 30s

.PHONY: all build test redis chromium gnu-parallel bench fuzz lint run man docker

all: build

# runner version prints these (-X), else what debug.ReadBuildInfo knows.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   = -X main.buildVersion=$(VERSION) -X main.buildRevision=$(REVISION)

build:
	$(GO) build ./...
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/runner ./cmd/runner

# Man pages, one per command, from the commands' help (cobra/doc):
# bin/man/runner.1, bin/man/runner-run.1, ... (man -l bin/man/runner.1).
man: build
	./bin/runner man bin/man

docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t lockpool/runner:$(VERSION) .

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

# Ensures chromium (the dashboard's browser tests drive it with chromedp)
# is on PATH, installing Debian's package with apt-get when root.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium || command -v chromium-browser)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "chromium not found; installing it with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "chromium is not on PATH and this is not root, so it cannot be installed automatically." >&2; \
		echo "Install it with: sudo apt-get install chromium" >&2; \
		exit 1; \
	fi

# go build first: examples have no tests, and must still compile.
test: redis chromium
	$(GO) build ./...
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 10m ./...

# Ensures GNU parallel, one of make bench's baselines, is on PATH
# (installing it with apt-get when root). Without it make bench still runs
# and reports that goal as missing.
gnu-parallel:
	@if parallel --version 2>/dev/null | grep -q 'GNU parallel'; then \
		echo "parallel: $$(command -v parallel) ($$(parallel --version | head -n1))"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "GNU parallel not found; installing it with apt-get"; \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y parallel) || \
			echo "apt-get could not install parallel: make bench reports its goal as missing" >&2; \
	else \
		echo "GNU parallel is not on PATH and this is not root: make bench reports its goal as missing." >&2; \
		echo "Install it with: sudo apt-get install parallel   (or: brew install parallel)" >&2; \
	fi

# The performance goals of bench/README.md: each goal's benchmark, then a
# table of every goal against its baseline measured in the same run. A
# missed goal is reported (FAIL in the table), not an error; a benchmark
# that errors, or a goal left without a result, fails the target.
# BENCH_ROUNDS rounds of the noisy ratios (min-max, judged on the median);
# BENCH_TASKS is the exec batch. Other benchmarks: go test -bench . ./pkg/...
BENCH_DIR    ?= bin/bench
BENCH_ROUNDS ?= 3
BENCH_TASKS  ?= 2000
BENCH_RUN     = $(BENCH_DIR)/report run $(BENCH_DIR)/results.jsonl -- -run '^$$'

bench: redis gnu-parallel
	@mkdir -p $(BENCH_DIR) && rm -f $(BENCH_DIR)/results.jsonl
	$(GO) build -o $(BENCH_DIR)/report ./bench/report
	$(BENCH_RUN) -timeout 40m -bench '^BenchmarkRunner(Throughput|Memory)$$' -benchtime 1x -count $(BENCH_ROUNDS) ./cmd/runner -args -bench.tasks $(BENCH_TASKS)
	$(BENCH_RUN) -bench '^Benchmark(AcquireRelease|RedisCPUPerCycle)$$' -benchtime 2s -count $(BENCH_ROUNDS) ./pkg/allocator
	$(BENCH_RUN) -bench '^BenchmarkPoolThroughput$$/^redis$$/^func$$' -benchtime 10000x -count $(BENCH_ROUNDS) ./pkg/worker
	$(BENCH_RUN) -bench '^Benchmark(KeepAliveScripts|RedisMemoryPerItem)$$' -benchtime 3x ./pkg/allocator
	$(BENCH_RUN) -timeout 20m -bench '^BenchmarkAcquireReleasePoolSize$$/^1M-vs-100$$' -benchtime 3s ./pkg/allocator
	$(BENCH_DIR)/report summary $(BENCH_DIR)/results.jsonl

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDifferential -fuzztime $(FUZZTIME) ./pkg/lock

lint:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then \
		echo "gofmt -l reports unformatted files:" >&2; echo "$$out" >&2; exit 1; \
	fi
	$(GO) vet ./...

# The main job: the runner on its embedded in-memory backend (no Redis),
# running the demo batch of config/example.yaml.
run: build
	./bin/runner run -c config/example.yaml
