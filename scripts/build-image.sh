#!/usr/bin/env bash
# Builds the Dispatch image (default tag dispatch:local, the one docker-compose.yml runs) from
# the Dockerfile with BuildKit, which its RUN --mount caches need:
#   - `docker build` when the buildx plugin is installed (BuildKit is then the builder: Docker
#     23 and later, Docker Desktop);
#   - else DOCKER_BUILDKIT=1 with a docker CLI older than 23, which has BuildKit built in
#     (Debian 12's docker.io is 20.10; /usr/bin/docker is tried too, should a newer CLI without
#     buildx come first on PATH).
# Usage: scripts/build-image.sh [tag]
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-dispatch:local}

build() {
  echo "build-image: $* build -t $tag ."
  local start=$SECONDS
  "$@" build -t "$tag" .
  echo "build-image: $tag built in $((SECONDS - start)) s"
}

if docker buildx version >/dev/null 2>&1; then
  build docker
  exit
fi
for cli in docker /usr/bin/docker; do
  version=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null) || continue
  if [ "${version%%.*}" -lt 23 ]; then
    DOCKER_BUILDKIT=1 build "$cli"
    exit
  fi
done
echo "build-image: no BuildKit: install the docker buildx plugin (docker-buildx-plugin)," >&2
echo "or build with a docker CLI older than 23 and DOCKER_BUILDKIT=1." >&2
exit 1
