#!/usr/bin/env bash
# The test suite through dockertest: no TEST_DATABASE_URL, TEST_REDIS_URL or TEST_STRIPE_URL,
# so internal/testenv starts PostgreSQL, Redis and stripe-mock containers for each test process
# (TEST_DOCKER=1: stripe-mock too, though its binary may be installed). Then it checks that
# nothing is left: every test process's containers must be gone once it has ended.
#
# Needs a Docker engine and the images postgres:16-alpine, redis:7-alpine and
# stripe/stripe-mock:v0.203.0 (pulled, or built by ../shared/tools/docker-setup.sh).
# Usage: scripts/test-docker.sh [packages…]        (default ./...)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "test-docker: no Docker engine answers (docker info). On the project's machines:" >&2
  echo "  sudo ../shared/tools/docker-setup.sh" >&2
  exit 1
fi

label=dispatch.testenv.owner
# Containers whose owning test process has ended (the label is host/pid/start-time).
orphans() {
  docker ps -a --filter "label=$label" --format "{{.ID}} {{.Label \"$label\"}} {{.Status}}" |
    while read -r id owner status; do
      IFS=/ read -r host pid start <<<"$owner"
      [ "$host" = "$(hostname)" ] || continue
      now=$(awk '{sub(/.*\) /, ""); print $20}' "/proc/$pid/stat" 2>/dev/null || true)
      [ "$now" = "$start" ] || echo "$id owner=$owner $status"
    done
}

volumes_before=$(docker volume ls -q | wc -l)
status=0
start=$SECONDS
env -u TEST_DATABASE_URL -u TEST_REDIS_URL -u TEST_STRIPE_URL TEST_DOCKER=1 \
  go test -tags docker -race -count=1 -timeout 30m "${@:-./...}" || status=$?
echo "test-docker: go test took $((SECONDS - start)) s (exit $status)"

# The watchers remove their owner's containers within seconds of its end.
for _ in $(seq 30); do
  [ -z "$(orphans)" ] && break
  sleep 1
done
left=$(orphans)
if [ -n "$left" ]; then
  echo "test-docker: containers left behind by ended test processes:" >&2
  echo "$left" >&2
  exit 1
fi
echo "test-docker: no container left; volumes: $volumes_before before, $(docker volume ls -q | wc -l) after"
exit "$status"
