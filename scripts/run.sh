#!/usr/bin/env bash
# Runs the whole system in the foreground: stripe-mock, migrations (creating the database),
# then the programs with demo data. Each program is started again whenever it ends (killed,
# crashed, or refused to start while PostgreSQL or Redis was down), as an orchestrator would.
# Ctrl-C (or SIGTERM to this script) stops everything. BIN names the programs' directory.
set -euo pipefail

# A script started in the background by another one ignores SIGINT, and no trap can undo that:
# start again with SIGINT restored, so that it stops the stack however the script was started.
if [ -z "${DISPATCH_RUN_SIGINT:-}" ] && env --default-signal=INT true 2>/dev/null; then
  DISPATCH_RUN_SIGINT=1 exec env --default-signal=INT "$0" "$@"
fi
cd "$(dirname "$0")/.."

bin="${BIN:-./bin}"
stripe_base="${STRIPE_API_BASE:-http://127.0.0.1:12111}"
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# keep NAME COMMAND...: runs COMMAND in the background and starts it again whenever it ends,
# 0.2 s later, the wait doubling up to 5 s while it keeps ending within 30 s of its start. The
# keeper passes SIGTERM on and returns once the program has stopped; it starts nothing once this
# script is gone. (Background subshells ignore SIGINT: on Ctrl-C the programs stop by themselves
# and the script's own trap stops the keepers during their wait.)
keep() {
  local name=$1 script=$$
  shift
  (
    set +e
    trap 'kill -TERM $(jobs -p) 2>/dev/null; wait; exit 0' TERM
    delay=0.2
    while :; do
      started=$SECONDS
      "$@" &
      wait $!
      status=$?
      if ((SECONDS - started >= 30)); then delay=0.2; fi
      sleep "$delay" &
      wait $!
      kill -0 "$script" 2>/dev/null || exit 0
      echo "run.sh: $name ended (exit $status) ${delay}s ago; starting it again" >&2
      delay=$(awk -v d="$delay" 'BEGIN { d *= 2; print (d > 5 ? 5 : d) }')
    done
  ) &
  pids+=($!)
}

# quietly runs a program with its output discarded (stripe-mock logs every request).
quietly() { exec "$@" >/dev/null 2>&1; }

stripe_up() { curl -fsS -o /dev/null -H 'Authorization: Bearer sk_test_dispatch' "$stripe_base/v1/customers" 2>/dev/null; }
if ! stripe_up; then
  port="${stripe_base##*:}"
  keep stripe-mock quietly "$(go env GOPATH)/bin/stripe-mock" -http-port "$port" -https-port $((port + 1))
  for _ in $(seq 50); do stripe_up && break; sleep 0.1; done
fi

# Migrations, tried again while PostgreSQL cannot be reached (still starting, or restarting;
# migrate exits 3): each one commits with its version, so a try cut short leaves nothing for
# the next to trip on. Any other failure (a bad setting, a failing migration) stops here.
for try in $(seq 60); do
  status=0
  "$bin/migrate" up || status=$?
  ((status == 0)) && break
  ((status == 3 && try < 60)) || exit 1
  echo "run.sh: PostgreSQL not reachable for the migrations; trying again in 1 s" >&2
  sleep 1
done

keep api "$bin/api"
# Each background program has its own ops port; OPS_ADDR would give both the same.
# Here every program shares the machine's cores with PostgreSQL, Redis and stripe-mock; the relay
# and the worker wait on them far more than they compute. One Go scheduler thread each
# (GOMAXPROCS=1 unless set) cut their CPU per order by 10-20 % and the idle worker's by about
# half on two cores (docs/performance.md, twelfth pass).
OPS_ADDR="${RELAY_OPS_ADDR:-:9102}" GOMAXPROCS="${GOMAXPROCS:-1}" keep outbox-relay "$bin/outbox-relay"
OPS_ADDR="${WORKER_OPS_ADDR:-:9101}" GOMAXPROCS="${GOMAXPROCS:-1}" keep worker "$bin/worker"

echo "Dispatch is up: API on ${HTTP_ADDR:-:8080}. Ctrl-C stops it." >&2
wait
