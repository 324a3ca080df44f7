# refcast — run `make` for the list of targets.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 10s
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.DEFAULT_GOAL := help
.PHONY: help run build test bench fuzz lint check cluster

help: ## show this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: ## run a node on the embedded bus at localhost:8080
	$(GO) run ./cmd/refcast serve

build: ## build ./refcast with the version stamped in
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o refcast ./cmd/refcast

test: ## run every test with the race detector (real git, redis-server, chromium), then the allocation tests without it; every step runs, failing at the end
	@rc=0; \
	$(GO) test -race -count=1 -timeout 20m ./... || rc=1; \
	$(GO) test -count=1 -run 'Allocat' ./... || rc=1; \
	if [ $$rc -ne 0 ]; then echo 'make test: FAILED (see above)'; fi; exit $$rc

bench: ## small load run vs nginx+nchan (500 streams; embedded and Redis nodes), the hook's cost on a real push, a small 3-node tier on Redis and on a Redis Cluster (300 streams), and the Go micro-benchmarks; full set: docs/performance.md
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2000x -skip 'Hostile|Fanout|StalledReaders|CostlySubscriptions' ./server/ ./server/fanout/ ./bus/memory/ ./bus/bolt/
	REFCAST_BENCH_COSTLY_EVENTS=200 $(GO) test -run '^$$' -bench 'CostlySubscriptions' -benchtime 1x ./server/
	$(GO) test -run '^$$' -bench 'StalledReaders' -benchtime 1x ./server/fanout/
	$(GO) test -run '^$$' -bench 'Fanout' -benchmem -benchtime 200x ./server/fanout/
	$(GO) test -run '^$$' -bench 'HostileClients' -benchtime 1x ./server/
	$(GO) test -run '^$$' -bench 'EnrichThousandTags' -benchtime 5x ./hook/
	$(GO) test -run '^$$' -bench 'PushLatency' -benchtime 5x ./cmd/refcast/
	$(GO) test -run '^$$' -bench 'GitFront' -benchtime 20x ./gitfront/
	SMALL=1 deploy/bench/compare.sh
	SMALL=1 deploy/bench/tier.sh

# A fuzz run that ends with only "context deadline exceeded" found no
# input (go's fuzzing coordinator can miss its own deadline on a loaded
# machine): it is run once more; a failing input always fails.
fuzz: ## run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t"; \
	    if ! out=$$($(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg 2>&1); then \
	      echo "$$out"; \
	      if echo "$$out" | grep -q 'Failing input written\|failing input'; then exit 1; fi; \
	      echo "fuzz $$pkg $$t: no failing input; running it once more"; \
	      $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	    fi; \
	  done; done

cluster: ## Redis, 3 nodes and HAProxy on loopback: drain one, kill one, nothing lost
	$(GO) test -race -count=1 -v -timeout 3m ./deploy/cluster/

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	$(GO) vet ./...
	@test -x "$(STATICCHECK)" || GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...

check: lint test ## lint and test, as CI does
