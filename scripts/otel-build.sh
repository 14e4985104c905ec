#!/usr/bin/env bash
# Build (or reuse) the pinned OpenTelemetry Collector and Jaeger v2 binaries the e2e suite runs.
#
#   scripts/otel-build.sh [collector|jaeger|all]     (default: all; `make otel` runs it)
#
# Binaries go to a cache outside the clone, keyed by the pinned versions (and the builder manifest's
# hash), so every clone on this machine reuses one build:
#   ${OTELPROBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otelprobe}/otelcol-otelprobe-v0.161.0-<hash>/otelcol-otelprobe
#   ${OTELPROBE_CACHE:-...}/jaeger-v1.75.0/jaeger
# Everything is fetched through the Go module proxy (GOPROXY), nothing else. A cold build prints how
# long it took; a cached one prints "reused". The last lines on stdout are KEY=PATH for each binary.
set -euo pipefail

COLLECTOR_RELEASE=v0.161.0   # core + contrib; collector-config/builder/otelcol-builder.yaml pins the same
JAEGER_VERSION=v1.75.0        # github.com/jaegertracing/jaeger/cmd/jaeger = Jaeger v2

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MANIFEST="$ROOT/collector-config/builder/otelcol-builder.yaml"
CACHE="${OTELPROBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otelprobe}"
GO_BUILD_FLAGS=(-trimpath "-ldflags=-s -w")

log() { echo "otel-build: $*" >&2; }

need_go() {
  # Go's own installer puts it in /usr/local/go/bin, which a non-login shell may not have on PATH.
  if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="$PATH:/usr/local/go/bin"
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "go is not installed: cannot build the Collector or Jaeger"
    exit 3
  fi
}

manifest_hash() { sha256sum "$MANIFEST" | cut -c1-10; }

collector_dir() { echo "$CACHE/otelcol-otelprobe-$COLLECTOR_RELEASE-$(manifest_hash)"; }

build_collector() {
  local dir bin started work
  dir="$(collector_dir)"
  bin="$dir/otelcol-otelprobe"
  if [[ -x "$bin" ]]; then
    log "collector reused: $bin"
    echo "OTELCOL_BIN=$bin"
    return
  fi
  need_go
  started=$(date +%s)
  mkdir -p "$CACHE"
  local builder_dir="$CACHE/ocb-$COLLECTOR_RELEASE"
  if [[ ! -x "$builder_dir/builder" ]]; then
    log "installing the OpenTelemetry Collector Builder $COLLECTOR_RELEASE"
    GOBIN="$builder_dir" go install "go.opentelemetry.io/collector/cmd/builder@$COLLECTOR_RELEASE"
  fi
  work="$(mktemp -d "$CACHE/.otelcol-build.XXXXXX")"
  # The manifest's output_path is relative; point it at this build's scratch directory.
  sed "s#^\(  output_path:\).*#\1 $work/src#" "$MANIFEST" >"$work/manifest.yaml"
  log "building the Collector (ocb $COLLECTOR_RELEASE) in $work"
  "$builder_dir/builder" --config="$work/manifest.yaml" >"$work/builder.log" 2>&1 || {
    tail -n 40 "$work/builder.log" >&2
    log "collector build failed; log: $work/builder.log"
    exit 1
  }
  mkdir -p "$dir"
  cp "$work/src/otelcol-otelprobe" "$bin.tmp" && mv "$bin.tmp" "$bin"
  cp "$work/manifest.yaml" "$work/src/main.go" "$dir/" 2>/dev/null || true
  rm -rf "$work"
  log "collector cold build took $(($(date +%s) - started)) s: $bin"
  echo "OTELCOL_BIN=$bin"
}

build_jaeger() {
  local dir="$CACHE/jaeger-$JAEGER_VERSION" bin started
  bin="$dir/jaeger"
  if [[ -x "$bin" ]]; then
    log "jaeger reused: $bin"
    echo "JAEGER_BIN=$bin"
    return
  fi
  need_go
  started=$(date +%s)
  mkdir -p "$dir/src"
  (
    cd "$dir/src"
    [[ -f go.mod ]] || go mod init otelprobe.local/jaeger-build >/dev/null 2>&1
    log "fetching github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION as a tool"
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
    log "building Jaeger $JAEGER_VERSION"
    go build "${GO_BUILD_FLAGS[@]}" -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
  )
  mv "$bin.tmp" "$bin"
  log "jaeger cold build took $(($(date +%s) - started)) s: $bin"
  echo "JAEGER_BIN=$bin"
}

case "${1:-all}" in
  collector) build_collector ;;
  jaeger) build_jaeger ;;
  all)
    build_collector
    build_jaeger
    ;;
  *)
    echo "usage: $0 [collector|jaeger|all]" >&2
    exit 2
    ;;
esac
