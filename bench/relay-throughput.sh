#!/usr/bin/env bash
# Measures the relay's durable end-to-end throughput with ferry-load, for
# docs/benchmarks.md (section "Relay: durable throughput and clusters"):
#
#   1. one relay on SQLite, and a cluster of three on PostgreSQL and NATS:
#      delivered messages per second and latency against offered load
#      (RATES, then as fast as acknowledged);
#   2. clusters of one, two and three relays on PostgreSQL and NATS, as fast
#      as acknowledged.
#
#   bench/relay-throughput.sh OUTDIR          # writes OUTDIR/*.csv and OUTDIR/runs.jsonl
#
# Every run: 400 users (connections, each subscribed, each from a loopback
# address of its own), 64 of them sending with up to 8 Sends in flight,
# 512-byte envelopes, about 8 seconds of messages (60,000 unpaced); ferry-load
# in one process beside the relays on the same machine. Needs PostgreSQL and
# NATS (bench/relay-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?output directory}"
mkdir -p "$out"
RATES="${RATES:-1000 2000 4000 6000 8000 12000}"
go build -o "$out/ferry-load" ./cmd/ferry-load
tmp=$(mktemp -d /tmp/ferry-throughput-XXXX)

# run LABEL RATE FLAGS...: one ferry-load run; appends its JSON to runs.jsonl.
run() {
  local label=$1 rate=$2; shift 2
  local m=60000
  [ "$rate" != 0 ] && m=$((rate * 8))
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  "$out/ferry-load" "$@" --conns 400 --senders 64 --window 8 --messages "$m" --rate "$rate" --json --timeout 5m |
    python3 -c "import json,sys; r=json.load(sys.stdin); r.update(label='$label', offered=$rate, loadavg=$load); print(json.dumps(r))" \
    >> "$out/runs.jsonl"
  tail -1 "$out/runs.jsonl"
}

cluster() { # cluster N [sqlite]: start N relays; sets FLAGS
  POOL=16 bench/relay-cluster.sh start "$tmp/c" "$@" > /dev/null
  FLAGS=$(bench/relay-cluster.sh flags "$tmp/c")
}
stop() { bench/relay-cluster.sh stop "$tmp/c" > /dev/null 2>&1; rm -rf "$tmp/c"; }
trap stop EXIT

for setup in sqlite pg3; do
  if [ $setup = sqlite ]; then cluster 1 sqlite; else cluster 3; fi
  for rate in $RATES 0; do run "$setup" "$rate" $FLAGS; done
  stop
done
for n in 1 2 3; do
  cluster "$n"
  run "pg-cluster-$n" 0 $FLAGS
  stop
done

python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
runs = [json.loads(l) for l in open(out + "/runs.jsonl")]
setups = ("sqlite", "pg3")
names = {"sqlite": "one relay, SQLite", "pg3": "3 relays, PostgreSQL + NATS"}
offered = sorted({r["offered"] for r in runs if r["label"] in setups and r["offered"] > 0})
def value(setup, rate, key):
    for r in runs:
        if r["label"] == setup and r["offered"] == rate:
            return f"{r[key]:.1f}"
    return ""
import csv
for key, fname in (("msgs_per_s", "throughput"), ("p99_ms", "p99")):
    with open(f"{out}/{fname}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["offered msgs/s"] + [names[s] for s in setups])
        for rate in offered:
            w.writerow([rate] + [value(s, rate, key) for s in setups])
EOF
echo "results in $out"
