# Dispatch — run the whole system locally, run every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GOBIN       := $(shell go env GOPATH)/bin
STRIPE_MOCK := $(GOBIN)/stripe-mock
STATICCHECK := $(GOBIN)/staticcheck
K6          := $(GOBIN)/k6
# Grafana Loki for `make observability-check`, built from its Go module: the version
# docker-compose.yml runs. (Debian's package named loki is another program.)
LOKI_VERSION := v3.5.1
LOKI         := $(GOBIN)/loki-$(LOKI_VERSION)

# `make load` drives a stack that is already running (BASE_URL); it starts nothing itself.
BASE_URL       ?= http://127.0.0.1:8080
WEBHOOK_SECRET ?= $(or $(STRIPE_WEBHOOK_SECRET),whsec_dispatch_local)
K6_FLAGS       ?= --summary-trend-stats 'avg,min,med,p(90),p(95),p(99),max'

# Tests use the local services unless told otherwise (see internal/testenv).
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export TEST_REDIS_URL    ?= redis://127.0.0.1:6379/0

.PHONY: help run test build migrate lint bench load tools test-docker image compose-check observability-check chaos chaos-short

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

run: build $(STRIPE_MOCK) ## start everything: stripe-mock, migrations, demo data, API on :8080
	@./scripts/run.sh

test: $(STRIPE_MOCK) ## run all tests (-race) against real Postgres, Redis and stripe-mock
	go test -race -count=1 -timeout 30m ./...

build: ## build every program into bin/
	go build -o bin/ ./cmd/...

migrate: ## apply the migrations to DATABASE_URL (creating the database if needed)
	go run ./cmd/migrate up

lint: $(STATICCHECK) ## gofmt check, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	$(STATICCHECK) ./...

bench: ## Go benchmarks of the hot paths
	go test -run '^$$' -bench . -benchmem ./...

# Rate limits: the smoke test (k6/smoke.js) respects them and passes against a plain `make run`.
# The order pipeline (k6/order-pipeline.js) signs up and logs in a new customer on every
# iteration, all from this host's IP, far past the limits (10 sign-ups and 5 logins a minute per
# IP). So it expects the stack started with the limits off, as SPEC §1 provides for load tests:
#     RATE_LIMIT_ENABLED=false make run      # in one terminal
#     make load                              # in another (BASE_URL, RATE, DURATION… to change)
# Its setup() aborts the run (k6 exit code 108) when the API answers with rate-limit headers.
# The scripts do not forge X-Forwarded-For to spread the load over fake client IPs: the API
# trusts no proxy unless TRUSTED_PROXIES names one, so the header changes nothing. See k6/README.md.
load: $(K6) ## k6 load test against a running `make run`
	$(K6) run $(K6_FLAGS) -e BASE_URL=$(BASE_URL) -e WEBHOOK_SECRET=$(WEBHOOK_SECRET) k6/smoke.js
	$(K6) run $(K6_FLAGS) -e BASE_URL=$(BASE_URL) -e WEBHOOK_SECRET=$(WEBHOOK_SECRET) k6/order-pipeline.js

# The container paths need a Docker engine and Compose (on the project's machines, which reach
# no registry: sudo ../shared/tools/docker-setup.sh, once). `make test` and .ci/run never use
# Docker. See README.md, "Operations".
test-docker: ## the tests through dockertest: Postgres, Redis, stripe-mock in containers, none left after
	./scripts/test-docker.sh

image: ## build the image dispatch:local from the Dockerfile (with BuildKit)
	./scripts/build-image.sh

compose-check: ## build the image, run the compose app services: an order, 3 workers, down -v
	go test -tags compose -count=1 -timeout 40m -run '^TestComposeStack$$' -v ./internal/deploycheck/

# Prometheus from Debian's package (installed when missing), Loki built from its Go module, both
# as local processes on free ports against the programs started locally: no Docker.
observability-check: $(LOKI) ## Prometheus and Loki for real: every program scraped, logs queryable
	@command -v prometheus >/dev/null || { echo "installing Debian's prometheus"; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
	LOKI_BIN=$(LOKI) go test -tags observability -count=1 -timeout 20m -run '^TestObservability$$' -v ./internal/deploycheck/

# The chaos suite (docs/chaos.md): built only with its tag, on a PostgreSQL and a Redis of its
# own (Debian's server binaries, redis-server), never the local services. CHAOS_DURATION is the
# time under load and faults; convergence and the checks add about a minute.
CHAOS_DURATION ?= 2m
chaos: $(STRIPE_MOCK) ## chaos suite: 2 APIs, 2 relays, 3 workers under load, SIGKILLs, Redis and Postgres restarts (CHAOS_DURATION=2m)
	CHAOS_DURATION=$(CHAOS_DURATION) go test -tags chaos -count=1 -timeout 30m -run '^TestChaos$$' -v ./internal/chaos/

chaos-short: $(STRIPE_MOCK) ## the chaos suite with 40 s of faults (CI), about 2 minutes
	CHAOS_DURATION=40s go test -tags chaos -count=1 -timeout 15m -run '^TestChaos$$' -v ./internal/chaos/

tools: $(STRIPE_MOCK) $(STATICCHECK)

$(STRIPE_MOCK):
	go install github.com/stripe/stripe-mock@v0.203.0

$(STATICCHECK):
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2

$(K6):
	go install go.k6.io/k6@v1.8.1

$(LOKI):
	./scripts/build-loki.sh $(LOKI_VERSION) $@
