#!/usr/bin/env bash
# Runs the whole system in the foreground: stripe-mock, migrations (creating the database),
# then the programs with demo data. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

stripe_base="${STRIPE_API_BASE:-http://127.0.0.1:12111}"
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

if ! curl -fsS -o /dev/null -H 'Authorization: Bearer sk_test_dispatch' "$stripe_base/v1/customers" 2>/dev/null; then
  port="${stripe_base##*:}"
  "$(go env GOPATH)/bin/stripe-mock" -http-port "$port" -https-port $((port + 1)) >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do
    curl -fsS -o /dev/null -H 'Authorization: Bearer sk_test_dispatch' "$stripe_base/v1/customers" 2>/dev/null && break
    sleep 0.1
  done
fi

./bin/migrate up

./bin/api &
pids+=($!)
# Each background program has its own ops port; OPS_ADDR would give both the same.
# Here every program shares the machine's cores with PostgreSQL, Redis and stripe-mock; the relay
# and the worker wait on them far more than they compute. One Go scheduler thread each
# (GOMAXPROCS=1 unless set) cut their CPU per order by 10-20 % and the idle worker's by about
# half on two cores (docs/performance.md, twelfth pass).
OPS_ADDR="${RELAY_OPS_ADDR:-:9102}" GOMAXPROCS="${GOMAXPROCS:-1}" ./bin/outbox-relay &
pids+=($!)
OPS_ADDR="${WORKER_OPS_ADDR:-:9101}" GOMAXPROCS="${GOMAXPROCS:-1}" ./bin/worker &
pids+=($!)

echo "Dispatch is up: API on ${HTTP_ADDR:-:8080}. Ctrl-C stops it." >&2
wait -n "${pids[@]}"
