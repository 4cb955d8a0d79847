#!/usr/bin/env bash
# bench/callgrind-http.sh: user-space instructions per proxied HTTP/1.1 keep-alive request,
# counted by valgrind's callgrind: the same count from run to run whatever else the machine
# does (unlike CPU time on a shared VM), so a change of a few hundred instructions per
# request shows. Kernel work (most of a proxied request's cost) is not counted: confirm a
# gain with bench/run.sh or interleaved runs.
#
#   bench/callgrind-http.sh                           # smartproxy and evloop-floor, http and http-post
#   TARGETS=smartproxy SCENARIOS=http N=20000 bench/callgrind-http.sh
#   SMARTPROXY=/tmp/old/smartproxy TARGETS=smartproxy bench/callgrind-http.sh   # another build
#
# The proxy runs under callgrind with GOMAXPROCS=1, GODEBUG=asyncpreemptoff=1 (callgrind
# cannot follow the runtime's preemption signals) and GOGC=off: under callgrind's slowdown the
# collector's timed cycles land in the counted window by chance (runs varied by ~300
# instructions); off, a run repeats within ~20, and allocation shows as mallocgc's own cost
# (GOGC=100 in the environment puts the collector back); loadgen makes 2,000 requests on 64
# keep-alive connections, the counters are zeroed, then it makes exactly N more, and the
# counters are dumped. Per-function costs: callgrind_annotate OUT/cg.TARGET.SCENARIO.1 (its
# inclusive costs are confused by goroutine switches; self costs are right).
set -euo pipefail

N="${N:-10000}"
TARGETS="${TARGETS:-smartproxy evloop-floor}"
SCENARIOS="${SCENARIOS:-http http-post}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$(mktemp -d /tmp/callgrind-http.XXXXXX)}"
H=127.0.0.1
BASE=$((31000 + (RANDOM % 99) * 10))
P_BE=$((BASE + 1)) P_PX=$((BASE + 2))
command -v valgrind >/dev/null || { echo "callgrind-http.sh: valgrind is not installed" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$OUT/bin"
(cd "$REPO" && go build -o "$OUT/bin/" ./bench/cmd/backend ./bench/cmd/loadgen ./bench/cmd/evhttp)
if [[ -z "${SMARTPROXY:-}" ]]; then
  (cd "$REPO" && go build -o "$OUT/bin/smartproxy" ./cmd/smartproxy)
  SMARTPROXY="$OUT/bin/smartproxy"
fi
cat >"$OUT/smartproxy.json" <<JSON
{"listenAddress": "$H", "maxConnectionsPerIP": 1000000000, "connectionRateLimitPerMinute": 1000000000,
 "routes": [{"name": "http", "match": {"ports": $P_PX, "domains": ["*"]},
             "action": {"type": "forward", "targets": [{"host": "$H", "port": $P_BE}]}}]}
JSON
"$OUT/bin/backend" -http $H:$P_BE >"$OUT/backend.log" 2>&1 &
pids+=($!)
"$OUT/bin/loadgen" -wait $H:$P_BE

echo "| target | scenario | instructions per request |"
echo "|---|---|---|"
for t in $TARGETS; do
  for s in $SCENARIOS; do
    case $t in
      smartproxy) cmd=("$SMARTPROXY" -config "$OUT/smartproxy.json" -log-level warn) ;;
      evloop-floor) cmd=("$OUT/bin/evhttp" -listen $H:$P_PX -target $H:$P_BE) ;;
      *) echo "callgrind-http.sh: unknown target $t" >&2; exit 1 ;;
    esac
    f="$OUT/cg.$t.$s"
    GOGC="${GOGC:-off}" GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file="$f" "${cmd[@]}" \
      >"$OUT/valgrind.$t.$s.log" 2>&1 &
    vp=$!
    pids+=($vp)
    "$OUT/bin/loadgen" -wait $H:$P_PX -wait-timeout 60s
    "$OUT/bin/loadgen" -scenario "$s" -addr $H:$P_PX -c 64 -count 2000 >/dev/null
    callgrind_control -z "$vp" >/dev/null 2>&1
    "$OUT/bin/loadgen" -scenario "$s" -addr $H:$P_PX -c 64 -count "$N" >"$OUT/loadgen.$t.$s.json"
    callgrind_control -d "$vp" >/dev/null 2>&1
    kill -INT "$vp"
    wait "$vp" 2>/dev/null || true
    total=$(awk '/^summary:/ {print $2; exit}' "$f.1")
    echo "| $t | $s | $((total / N)) |"
  done
done
echo
echo "callgrind files: $OUT"
