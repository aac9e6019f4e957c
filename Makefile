# Dispatch — run the whole system locally, run every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GOBIN       := $(shell go env GOPATH)/bin
STRIPE_MOCK := $(GOBIN)/stripe-mock
STATICCHECK := $(GOBIN)/staticcheck

# Tests use the local services unless told otherwise (see internal/testenv).
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export TEST_REDIS_URL    ?= redis://127.0.0.1:6379/0

.PHONY: help run test build migrate lint bench tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

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

tools: $(STRIPE_MOCK) $(STATICCHECK)

$(STRIPE_MOCK):
	go install github.com/stripe/stripe-mock@v0.203.0

$(STATICCHECK):
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
