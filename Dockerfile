# One image holds every Dispatch program; the command picks which one runs:
#   docker run dispatch            → /app/api (the default CMD)
#   docker-compose.yml sets command: ["/app/worker"], ["/app/outbox-relay"], ["/app/migrate", "up"].
# /app/dispatchctl (signed test webhooks, timelines) is in the image too:
#   docker compose exec api /app/dispatchctl webhook succeeded <order-id>
#
# Build with BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before that): the
# RUN --mount caches keep Go's module and build caches between builds. There is no `# syntax=`
# line on purpose: the frontend built into BuildKit reads this file, so building needs no image
# besides the two below.
#
# Base image: alpine, not distroless. The programs have no "healthcheck" mode of their own and
# distroless has no shell and no HTTP client, so a container health check there would need extra
# Go code. Alpine's busybox wget probes /ready (api :8080, worker :9101, relay :9102) with no
# change to the programs. There is deliberately no HEALTHCHECK here: the port depends on the
# program, and migrate is a one-shot; docker-compose.yml declares each service's check.

ARG GO_VERSION=1.26
ARG ALPINE_VERSION=3.22

# ---- build: every program of ./cmd, static (CGO off), stripped, no local paths ----
FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/...

# ---- runtime: small, non-root ----
FROM alpine:${ALPINE_VERSION} AS runtime
# ca-certificates: live Stripe and Loki over HTTPS; tzdata: time zones for log timestamps.
RUN apk add --no-cache ca-certificates tzdata \
 && addgroup -S -g 10001 dispatch \
 && adduser -S -D -H -u 10001 -G dispatch -s /sbin/nologin dispatch
WORKDIR /app
COPY --from=build /out/ /app/
USER 10001:10001
# api HTTP, worker ops (/metrics /health /ready), relay ops.
EXPOSE 8080 9101 9102
CMD ["/app/api"]
