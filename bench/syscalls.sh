#!/usr/bin/env bash
# bench/syscalls.sh: system calls per proxied connection, counted with `strace -c -f`, for
# smartproxy, HAProxy and nginx on the two connection scenarios of run.sh:
#   tcp  connect, 64-byte echo, close (run.sh's connrate) through a plain TCP forward
#   sni  TLS 1.3 passthrough routed by SNI, full handshake, 64-byte echo, close (run.sh's sni)
# Counts are deterministic where timings on a shared machine are not: strace attaches to the
# running proxy (all threads) after it is ready, loadgen makes exactly N connections
# (-count), strace detaches, and every count is divided by N.
#
#   bench/syscalls.sh                        # N=2000 connections, 1 client at a time
#   N=5000 C=8 bench/syscalls.sh             # 8 concurrent clients
#   SMARTPROXY=/tmp/old/smartproxy TARGETS=smartproxy bench/syscalls.sh   # another build
#   TARGETS="smartproxy evloop haproxy" ...  # evloop: the internal/evloop prototype (bench/cmd/evproxy)
#   TARGETS="smartproxy smartproxy-ev haproxy" ...  # smartproxy-ev: Options.Engine = EngineEventLoop
#   NBIOPROXY=/path/nbioproxy TARGETS="nbio evloop" ...   # nbio: a forwarder on lesismal/nbio
#   SMARTPROXY_B=/tmp/old/smartproxy TARGETS="smartproxy smartproxy-b" CPU_ROUNDS=3 N=20000 C=8 \
#     COUNT=0 bench/syscalls.sh              # A/B: proxy CPU µs per connection, no strace
# CPU_ROUNDS=R adds R interleaved rounds without strace that report the proxy's CPU time
# (utime+stime from /proc, as loadgen -pid samples it) per connection; COUNT=0 skips strace.
#
# Ports are picked at random in 20000-29999 (several people run benchmarks on this machine);
# the proxies get GOMAXPROCS=1 / nbthread 1 / one worker, as in run.sh. Output: one Markdown
# table per scenario on stdout, the raw strace summaries in $OUT.
set -euo pipefail

N="${N:-2000}"
C="${C:-1}"
if [[ -z "${TARGETS:-}" ]]; then
  TARGETS="smartproxy haproxy"
  if [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]]; then TARGETS+=" nginx"
  else echo "syscalls.sh: nginx's stream module is not installed (libnginx-mod-stream): nginx skipped" >&2; fi
fi
SCENARIOS="${SCENARIOS:-tcp sni}"
CPU_ROUNDS="${CPU_ROUNDS:-0}"
COUNT="${COUNT:-1}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$(mktemp -d /tmp/syscalls.XXXXXX)}"
H=127.0.0.1
BASE=$((20000 + (RANDOM % 990) * 10))
P_ECHO=$((BASE + 1)) P_TLS=$((BASE + 2)) P_TCP=$((BASE + 3)) P_SNI=$((BASE + 4))

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$OUT/bin" "$OUT/nginx"
(cd "$REPO" && go build -o "$OUT/bin/" ./bench/cmd/backend ./bench/cmd/loadgen ./bench/cmd/evproxy ./bench/cmd/profproxy)
if [[ -z "${SMARTPROXY:-}" ]]; then
  (cd "$REPO" && go build -o "$OUT/bin/smartproxy" ./cmd/smartproxy)
  SMARTPROXY="$OUT/bin/smartproxy"
fi
"$OUT/bin/backend" -gencert "$OUT/cert" >/dev/null
"$OUT/bin/backend" -cert "$OUT/cert" -echo $H:$P_ECHO -tls $H:$P_TLS >"$OUT/backend.log" 2>&1 &
pids+=($!)
"$OUT/bin/loadgen" -wait $H:$P_ECHO,$H:$P_TLS

cat >"$OUT/smartproxy.json" <<JSON
{"listenAddress": "$H", "maxConnectionsPerIP": 1000000000, "connectionRateLimitPerMinute": 1000000000,
 "gracefulShutdownTimeout": 1000,
 "routes": [
  {"name": "tcp", "match": {"ports": $P_TCP}, "action": {"type": "forward", "targets": [{"host": "$H", "port": $P_ECHO}]}},
  {"name": "sni", "match": {"ports": $P_SNI, "domains": ["echo.bench.test"]},
   "action": {"type": "forward", "tls": {"mode": "passthrough"}, "targets": [{"host": "$H", "port": $P_TLS}]}}]}
JSON
cat >"$OUT/haproxy.cfg" <<CFG
global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe_tcp
    bind $H:$P_TCP
    default_backend be_echo
frontend fe_sni
    bind $H:$P_SNI
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend be_tls if { req_ssl_sni -i echo.bench.test }
backend be_echo
    server s1 $H:$P_ECHO
backend be_tls
    server s1 $H:$P_TLS
CFG
cat >"$OUT/nginx/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 4096; }
stream {
    server { listen $H:$P_TCP; proxy_pass $H:$P_ECHO; proxy_half_close on; }
    map \$ssl_preread_server_name \$sni_up { echo.bench.test $H:$P_TLS; default $H:9; }
    server { listen $H:$P_SNI; ssl_preread on; proxy_pass \$sni_up; }
}
CFG

# start TARGET: starts the proxy, waits for its ports, sets TRACE_PID (the process to trace)
start() {
  case $1 in
    smartproxy-b)
      GOMAXPROCS=1 "$SMARTPROXY_B" -config "$OUT/smartproxy.json" -log-level warn >>"$OUT/smartproxy-b.log" 2>&1 &
      PROXY_PID=$!; TRACE_PID=$PROXY_PID ;;
    smartproxy)
      GOMAXPROCS=1 "$SMARTPROXY" -config "$OUT/smartproxy.json" -log-level warn >>"$OUT/smartproxy.log" 2>&1 &
      PROXY_PID=$!; TRACE_PID=$PROXY_PID ;;
    smartproxy-ev)
      # the library with Options.Engine = EngineEventLoop, from the same config (bench/cmd/profproxy)
      GOMAXPROCS=1 "$OUT/bin/profproxy" -config "$OUT/smartproxy.json" -engine eventloop -pprof "" >>"$OUT/smartproxy-ev.log" 2>&1 &
      PROXY_PID=$!; TRACE_PID=$PROXY_PID ;;
    evloop)
      # the internal/evloop prototype: forwards without routing, so sni is not parsed here
      GOMAXPROCS=1 "$OUT/bin/evproxy" -listen $H:$P_TCP=$H:$P_ECHO -listen $H:$P_SNI=$H:$P_TLS >>"$OUT/evloop.log" 2>&1 &
      PROXY_PID=$!; TRACE_PID=$PROXY_PID ;;
    nbio)
      # a forwarder on github.com/lesismal/nbio, built outside this repository (see README)
      GOMAXPROCS=1 "$NBIOPROXY" -listen $H:$P_TCP=$H:$P_ECHO -listen $H:$P_SNI=$H:$P_TLS >>"$OUT/nbio.log" 2>&1 &
      PROXY_PID=$!; TRACE_PID=$PROXY_PID ;;
    haproxy)
      haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/haproxy.log" 2>&1 &
      PROXY_PID=$!; TRACE_PID=$PROXY_PID ;;
    nginx)
      nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -g 'daemon off;' >>"$OUT/nginx.log" 2>&1 &
      PROXY_PID=$!
      "$OUT/bin/loadgen" -wait $H:$P_TCP,$H:$P_SNI
      TRACE_PID=$(pgrep -P "$PROXY_PID" | head -1) ;;
  esac
  pids+=("$PROXY_PID")
  "$OUT/bin/loadgen" -wait $H:$P_TCP,$H:$P_SNI
}

stop() { kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; }

# count TARGET SCENARIO: one traced run of N connections -> $OUT/TARGET-SCENARIO.strace
count() {
  local t=$1 s=$2 addr scen
  if [[ $s == tcp ]]; then addr=$H:$P_TCP scen=connrate; else addr=$H:$P_SNI scen=sni; fi
  start "$t"
  "$OUT/bin/loadgen" -scenario "$scen" -addr "$addr" -c "$C" -count 50 -ca "$OUT/cert/cert.pem" >/dev/null # warm
  strace -f -c -q -o "$OUT/$t-$s.strace" -p "$TRACE_PID" &
  local st=$!
  sleep 1
  "$OUT/bin/loadgen" -scenario "$scen" -addr "$addr" -c "$C" -count "$N" -ca "$OUT/cert/cert.pem" >"$OUT/$t-$s.json"
  sleep 0.5
  kill -INT $st; wait $st 2>/dev/null || true
  stop
  grep -q '"valid":true' "$OUT/$t-$s.json" || { echo "$t $s: invalid run: $(cat "$OUT/$t-$s.json")" >&2; exit 1; }
}

# cpu TARGET SCENARIO ROUND: one run of N connections without strace; prints µs per connection
cpu() {
  local t=$1 s=$2 addr scen line
  if [[ $s == tcp ]]; then addr=$H:$P_TCP scen=connrate; else addr=$H:$P_SNI scen=sni; fi
  start "$t"
  "$OUT/bin/loadgen" -scenario "$scen" -addr "$addr" -c "$C" -count 200 -ca "$OUT/cert/cert.pem" >/dev/null # warm
  line="$("$OUT/bin/loadgen" -scenario "$scen" -addr "$addr" -c "$C" -count "$N" -pid "$TRACE_PID" -ca "$OUT/cert/cert.pem")"
  stop
  echo "$line" >>"$OUT/cpu.jsonl"
  grep -q '"valid":true' <<<"$line" || { echo "$t $s: invalid run: $line" >&2; exit 1; }
  sed -E 's/.*"proxy_cpu_s":([0-9.e+-]+).*/\1/' <<<"$line" | awk -v n="$N" '{ printf "%.1f", $1 * 1e6 / n }'
}

for s in $SCENARIOS; do
  if (( CPU_ROUNDS > 0 )); then
    echo
    echo "#### $s: proxy CPU µs per connection (N=$N, $C concurrent, no strace; rounds interleaved)"
    echo
    echo "| target |$(for r in $(seq 1 "$CPU_ROUNDS"); do printf ' round %d |' "$r"; done)"
    echo "|---|$(printf -- '---|%.0s' $(seq 1 "$CPU_ROUNDS"))"
    declare -A row=()
    for r in $(seq 1 "$CPU_ROUNDS"); do
      for t in $TARGETS; do row[$t]+=" $(cpu "$t" "$s") |"; done
    done
    for t in $TARGETS; do echo "| $t |${row[$t]}"; done
    unset row
  fi
  (( COUNT > 0 )) || continue
  for t in $TARGETS; do count "$t" "$s"; done
  # Table: one row per syscall seen by any target, calls per connection (errors in brackets).
  echo
  echo "#### $s: system calls per proxied connection (N=$N, $C concurrent; strace -c -f on the proxy)"
  echo
  awk -v n="$N" -v targets="$TARGETS" -v dir="$OUT" -v s="$s" '
    BEGIN {
      nt = split(targets, T, " ")
      for (i = 1; i <= nt; i++) {
        f = dir "/" T[i] "-" s ".strace"
        while ((getline line < f) > 0) {
          m = split(line, F, " ")
          if (m < 5 || F[1] !~ /^[0-9.]+$/ || F[m] == "total") continue
          calls = F[4]; errs = (m == 6) ? F[5] : 0; name = F[m]
          C[T[i], name] = calls; E[T[i], name] = errs; TOT[T[i]] += calls
          if (!(name in seen)) { seen[name] = 1; names[++nn] = name }
        }
      }
      hdr = "| syscall |"; sep = "|---|"
      for (i = 1; i <= nt; i++) { hdr = hdr " " T[i] " |"; sep = sep "---|" }
      print hdr; print sep
      for (j = 1; j <= nn; j++) {
        row = "| `" names[j] "` |"
        for (i = 1; i <= nt; i++) {
          v = C[T[i], names[j]] / n
          cell = (v == 0) ? "–" : sprintf("%.2f", v)
          if (E[T[i], names[j]] > 0) cell = cell sprintf(" (%.2f err)", E[T[i], names[j]] / n)
          row = row " " cell " |"
        }
        print row
      }
      row = "| **total** |"
      for (i = 1; i <= nt; i++) row = row sprintf(" **%.2f** |", TOT[T[i]] / n)
      print row
    }'
done
echo
echo "raw strace summaries: $OUT"
