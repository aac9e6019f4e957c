#!/usr/bin/env bash
# Builds Grafana Loki from its Go module (the Go module proxy is all it needs), for
# `make observability-check` on machines without a Loki image or package. (Debian's package
# named "loki" is unrelated: MCMC linkage analysis.)
# `go install module@version` refuses modules with replace directives, as Loki's go.mod has:
# build inside a copy of the module instead, as its main module. One replacement points into
# the repository (./pkg/push, a module of its own, so not in the v3 module's zip): fill it with
# the version of that module which go.mod requires.
# Usage: scripts/build-loki.sh VERSION OUTPUT      e.g. v3.5.1 ~/go/bin/loki
set -euo pipefail
version=$1 out=$2
echo "build-loki: Loki $version from github.com/grafana/loki/v3 (long: about 20 min on 2 busy cores, once)"
start=$SECONDS
src=$(go mod download -json "github.com/grafana/loki/v3@$version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src/." "$work"
push=$(awk '$1 == "github.com/grafana/loki/pkg/push" && $2 ~ /^v/ {print $2; exit}' "$src/go.mod")
push_src=$(go mod download -json "github.com/grafana/loki/pkg/push@$push" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
mkdir -p "$work/pkg/push"
cp -r "$push_src/." "$work/pkg/push"
chmod -R u+w "$work"
mkdir -p "$(dirname "$out")"
(cd "$work" && CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w -X github.com/grafana/loki/v3/pkg/util/build.Version=$version" -o "$out" ./cmd/loki)
echo "build-loki: $out built in $((SECONDS - start)) s"
