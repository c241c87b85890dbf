#!/usr/bin/env bash
# Starts a Ferry relay cluster on this machine for ferry-load runs
# (docs/benchmarks.md, section "Relay cluster"): N ferry-relay processes on
# loopback sharing one PostgreSQL schema and NATS, each with its own
# --metrics port.
#
#   bench/relay-cluster.sh start DIR N [sqlite]   # N relays; "sqlite": one relay, no cluster
#   bench/relay-cluster.sh links DIR              # one link per node (its own endpoint only)
#   bench/relay-cluster.sh flags DIR              # --relay LINK --metrics URL for every node
#   bench/relay-cluster.sh stop DIR               # stop the relays (SIGTERM) and drop the schema
#
# FERRY_POSTGRES_URL and FERRY_NATS_URL name the services (defaults as in
# .ci/run); POOL is each relay's PostgreSQL connections (default 4, so
# that 14 relays fit in PostgreSQL's default 100; use 16 for up to 5). The relays listen on 127.0.0.1:17500+i and serve metrics on
# 127.0.0.1:17600+i. Every relay and ferry-load stops by itself only when
# told: run "stop" when done.
set -euo pipefail
cd "$(dirname "$0")/.."
pg="${FERRY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
nats="${FERRY_NATS_URL:-nats://127.0.0.1:4222}"
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,14p' "$0"; exit 2; }

case "$cmd" in
start)
  n="${3:?number of relays}"; mode="${4:-cluster}"
  mkdir -p "$dir"
  go build -o "$dir/ferry-relay" ./cmd/ferry-relay
  schema="bench_$(date +%s)"
  args=()
  if [ "$mode" != sqlite ]; then
    psql -q -d "$pg" -c "CREATE SCHEMA $schema"
    echo "$schema" > "$dir/schema"
    args=(--store "$pg?search_path=$schema&pool_max_conns=${POOL:-4}" --cluster "$nats")
  fi
  for i in $(seq 0 $((n - 1))); do
    mkdir -p "$dir/node$i"
    [ "$i" -gt 0 ] && cp "$dir/node0/relay.key" "$dir/node$i/"
    "$dir/ferry-relay" --data "$dir/node$i" --listen "tcp=127.0.0.1:$((17500 + i))" \
      --metrics "127.0.0.1:$((17600 + i))" --node "node$i" --log-level warn "${args[@]}" \
      > "$dir/node$i/link" 2> "$dir/node$i/log" &
    echo $! > "$dir/node$i/pid"
    for _ in $(seq 100); do [ -s "$dir/node$i/link" ] && break; sleep 0.1; done
    [ -s "$dir/node$i/link" ] || { echo "node$i did not start:"; cat "$dir/node$i/log"; exit 1; }
  done
  echo "started $n relays in $dir"
  ;;
links|flags)
  for d in "$dir"/node*; do
    i="${d##*node}"
    key=$(sed -n 's/.*k=\([^&]*\).*/\1/p' "$d/link")
    l="ferry://relay?v=1&k=$key&tcp=127.0.0.1:$((17500 + i))"
    if [ "$cmd" = links ]; then echo "$l"; else printf -- '--relay %s --metrics http://127.0.0.1:%d/metrics ' "$l" $((17600 + i)); fi
  done
  [ "$cmd" = flags ] && echo
  ;;
stop)
  for p in "$dir"/node*/pid; do kill "$(cat "$p")" 2>/dev/null || true; done
  sleep 2
  [ -f "$dir/schema" ] && psql -q -d "$pg" -c "DROP SCHEMA $(cat "$dir/schema") CASCADE" || true
  echo "stopped"
  ;;
*) echo "unknown command $cmd"; exit 2 ;;
esac
