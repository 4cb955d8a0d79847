#!/usr/bin/env bash
# bench/syscalls-http.sh: system calls per proxied HTTP/1.1 keep-alive request, for smartproxy
# (fast path and net/http server), HAProxy and nginx, on run.sh's http (GET, 1 KiB responses)
# and http-post (16 KiB bodies) scenarios, 64 keep-alive connections.
# Counted with `perf stat` on the syscalls:sys_enter_* tracepoints of the proxy's threads:
# unlike strace it does not stop the proxy at each call, so how often a read finds nothing
# (EAGAIN: timing) is what it is under load. loadgen makes exactly N requests (-count), perf
# is attached before and stopped after; counts are divided by N (the 64 connections' own
# accept/close calls add under 0.01 per request).
#
#   bench/syscalls-http.sh                      # N=50000
#   SMARTPROXY=/tmp/old/smartproxy TARGETS=smartproxy bench/syscalls-http.sh   # another build
#
# Ports are picked at random in 30000-30999; the proxies get GOMAXPROCS=1 / nbthread 1 / one
# worker and core 1, loadgen and the backend core 0, as in run.sh.
set -euo pipefail

N="${N:-50000}"
TARGETS="${TARGETS:-smartproxy smartproxy-nethttp haproxy nginx}"
SCENARIOS="${SCENARIOS:-http http-post}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$(mktemp -d /tmp/syscalls-http.XXXXXX)}"
H=127.0.0.1
BASE=$((30000 + (RANDOM % 99) * 10))
P_BE=$((BASE + 1)) P_PX=$((BASE + 2))
command -v perf >/dev/null || { echo "syscalls-http.sh: perf is not installed (linux-perf)" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$OUT/bin" "$OUT/nginx/logs"
(cd "$REPO" && go build -o "$OUT/bin/" ./bench/cmd/backend ./bench/cmd/loadgen)
if [[ -z "${SMARTPROXY:-}" ]]; then
  (cd "$REPO" && go build -o "$OUT/bin/smartproxy" ./cmd/smartproxy)
  SMARTPROXY="$OUT/bin/smartproxy"
fi
"$OUT/bin/backend" -gencert "$OUT/cert" >/dev/null
taskset -c 0 "$OUT/bin/backend" -cert "$OUT/cert" -http $H:$P_BE >"$OUT/backend.log" 2>&1 &
pids+=($!)
"$OUT/bin/loadgen" -wait $H:$P_BE

for fast in true false; do
  cat >"$OUT/smartproxy-$fast.json" <<JSON
{"listenAddress": "$H", "httpFastPath": $fast, "maxConnectionsPerIP": 1000000000,
 "connectionRateLimitPerMinute": 1000000000,
 "routes": [{"name": "http", "match": {"ports": $P_PX, "domains": ["*"]},
             "action": {"type": "forward", "targets": [{"host": "$H", "port": $P_BE}]}}]}
JSON
done
cat >"$OUT/haproxy.cfg" <<CFG
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind $H:$P_PX
    timeout http-keep-alive 1h
    default_backend be
backend be
    server s1 $H:$P_BE
CFG
cat >"$OUT/nginx/nginx.conf" <<CFG
worker_processes 1;
events { worker_connections 4096; }
error_log stderr error;
pid $OUT/nginx/nginx.pid;
http { access_log off;
  client_body_buffer_size 64k;
  upstream be { server $H:$P_BE; keepalive 64; keepalive_requests 1000000; keepalive_timeout 1h; }
  server { listen $H:$P_PX; keepalive_requests 1000000; keepalive_timeout 1h;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CFG

start() { # target -> PROXY
  case "$1" in
    smartproxy) GOMAXPROCS=1 taskset -c 1 "$SMARTPROXY" -config "$OUT/smartproxy-true.json" -log-level warn >>"$OUT/proxy.log" 2>&1 & ;;
    smartproxy-nethttp) GOMAXPROCS=1 taskset -c 1 "$SMARTPROXY" -config "$OUT/smartproxy-false.json" -log-level warn >>"$OUT/proxy.log" 2>&1 & ;;
    haproxy) taskset -c 1 haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/proxy.log" 2>&1 & ;;
    nginx) taskset -c 1 nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -g 'daemon off;' >>"$OUT/proxy.log" 2>&1 & ;;
    *) echo "syscalls-http.sh: unknown target $1" >&2; exit 2 ;;
  esac
  PROXY=$!
  pids+=("$PROXY")
  "$OUT/bin/loadgen" -wait $H:$P_PX
}

for s in $SCENARIOS; do
  echo "### $s: system calls per request (N=$N, 64 keep-alive connections)"
  echo
  echo "| target | total | reads (read/recvfrom) | writes (write/writev/sendto) | epoll | other (top 3) |"
  echo "|---|---|---|---|---|---|"
  for t in $TARGETS; do
    start "$t"
    tids="$(ls /proc/$PROXY/task | tr '\n' ',')${tids_extra:-}"
    for c in $(pgrep -P "$PROXY" || true); do tids+="$(ls /proc/$c/task | tr '\n' ',')"; done
    perf stat -e 'syscalls:sys_enter_*' -t "${tids%,}" -o "$OUT/$s-$t.perf" &
    perf_pid=$!
    sleep 0.5
    taskset -c 0 "$OUT/bin/loadgen" -scenario "$s" -addr $H:$P_PX -c 64 -count "$N" >"$OUT/$s-$t.json" 2>>"$OUT/loadgen.log"
    kill -INT $perf_pid; wait $perf_pid 2>/dev/null || true
    kill "$PROXY"; wait "$PROXY" 2>/dev/null || true
    python3 - "$OUT/$s-$t.perf" "$N" "$t" <<'PY'
import sys
path, n, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = {}
for line in open(path):
    p = line.split()
    if len(p) >= 2 and "sys_enter_" in p[1] and p[0][0].isdigit():
        c = int(p[0].replace(",", ""))
        if c:
            calls[p[1].split("sys_enter_")[1]] = c / n
reads = sum(v for k, v in calls.items() if k in ("read", "recvfrom", "readv", "recvmsg"))
writes = sum(v for k, v in calls.items() if k in ("write", "writev", "sendto", "sendmsg"))
epoll = sum(v for k, v in calls.items() if k.startswith("epoll"))
rest = sorted(((v, k) for k, v in calls.items() if not (k in ("read", "recvfrom", "readv", "recvmsg", "write", "writev", "sendto", "sendmsg") or k.startswith("epoll"))), reverse=True)
other = ", ".join("%s %.2f" % (k, v) for v, k in rest[:3] if v >= 0.005)
print("| %s | %.2f | %.2f | %.2f | %.2f | %s |" % (target, sum(calls.values()), reads, writes, epoll, other))
PY
  done
  echo
done
echo "raw perf summaries: $OUT" >&2
