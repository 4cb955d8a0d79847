#!/usr/bin/env bash
# Benchmarks smartproxy side by side with HAProxy and nginx (and direct
# client->backend), following shared/docs/benchmarking.md: proxy pinned to
# core 1 (GOMAXPROCS=1 / nbthread 1 / worker_processes 1), load generator and
# backends to core 0, fresh proxy per run, interleaved rounds, medians,
# every byte verified. See bench/README.md.
#
#   bench/run.sh [--quick] [--only SCENARIO] [--rounds N] [--out DIR] [--no-install]
#   env: IDLE_N (idle-rss connections, default 9000), IDLE_SETTLE (idle time before the
#   idle-rss sample, default 3s), MAX_CONNS (maxconns stop, default fd limit - 100)
#   MAXCONNS_PROCS, MAXCONNS_TOTAL, MAXCONNS_TARGETS, MAXCONNS_SINGLE: maxconns over several
#   processes (bench/maxconns-multi.sh); PEER_FWD (default 0: HAProxy and nginx at their
#   defaults, which add no forwarding field; 1: like for like, they add the five smartproxy adds)
#
# Scenarios: bulk connrate sni tlsterm (= tlsterm-full + tlsterm-resume) http http-post https
#   (httpall = http + http-post + https) idle-rss maxconns
#   nftables (bench/nftables.sh: kernel route vs user-space route vs direct, in namespaces)
# One run at a time per machine: a second waits on the lock file BENCH_LOCK (env, default
#   /tmp/smartproxy-bench.lock).
set -euo pipefail

IDLE_SETTLE="${IDLE_SETTLE:-3s}"
QUICK=0 ONLY="" ROUNDS="" OUT="" INSTALL=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
OUT="${OUT:-$BENCH_DIR/out/$(date +%Y%m%d-%H%M%S)}"
OUT="$(realpath -m "$OUT")" # nginx -p and the configs need an absolute path
mkdir -p "$OUT/bin" "$OUT/logs" "$OUT/cert" "$OUT/nginx"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# ---- parameters -------------------------------------------------------------
if [[ $QUICK == 1 ]]; then
  ROUNDS="${ROUNDS:-3}" MEM_ROUNDS=1 DUR=2s WARM=300ms BULK_MIB=256 IDLE_N="${IDLE_N:-9000}" CONC=32
else
  ROUNDS="${ROUNDS:-5}" MEM_ROUNDS=3 DUR="${DUR:-10s}" WARM=1s BULK_MIB=1024 IDLE_N="${IDLE_N:-9000}" CONC=32
fi
HTTP_CONC=64
# https: the TLS 1.3 suite every proxy must negotiate (loadgen checks each connection). Go's
# server picks AES-128-GCM for a client with AES hardware; HAProxy would pick its own first
# choice (AES-256-GCM), so the peers' https ports are limited to this one.
HTTPS_CIPHER=TLS_AES_128_GCM_SHA256
LOAD_CPU=0 PROXY_CPU=1

HTTP_SCENARIOS=(http http-post https)
case "$ONLY" in
  "") SCENARIOS=(bulk connrate sni tlsterm-full tlsterm-resume "${HTTP_SCENARIOS[@]}" idle-rss maxconns nftables) ;;
  tlsterm) SCENARIOS=(tlsterm-full tlsterm-resume) ;;
  httpall) SCENARIOS=("${HTTP_SCENARIOS[@]}") ;;
  bulk|connrate|sni|tlsterm-full|tlsterm-resume|http|http-post|https|idle-rss|maxconns|nftables) SCENARIOS=("$ONLY") ;;
  *) echo "run.sh: unknown scenario $ONLY" >&2; exit 2 ;;
esac

# ---- targets: the one place to change them -------------------------------------
# TCP_TARGETS run every scenario but the HTTP ones; bulk adds haproxy-splice.
# HTTP_TARGETS run http, http-post and https. smartproxy-nethttp is the CLI with
# "httpFastPath": false (HTTP/1.1 on net/http's server); it runs only here, since the fast
# path changes nothing on a TCP port.
# smartproxy is the CLI at its defaults: the event-loop engine on TCP forwarding and TLS
# passthrough ports and on plain-HTTP ports (HTTP mode: http, http-post), the HTTP/1.1 fast
# path on goroutines for TLS-terminated ones (https). smartproxy-gr is the same config with
# Options.Engine = EngineGoroutines: the goroutine path everywhere (the HTTP/1.1 fast path on
# goroutines for http and http-post too).
TCP_TARGETS=(direct smartproxy smartproxy-gr haproxy nginx)
HTTP_TARGETS=(direct smartproxy smartproxy-gr smartproxy-nethttp haproxy nginx)
# evloop-floor (http and http-post only: no TLS) is not a proxy: bench/cmd/evhttp, internal/evloop's
# HTTP mode relaying every request to the backend with no routing, checks, logs or metrics, its
# heads rewritten as a proxy's are. It is the floor under any proxy built on the loop.
FLOOR_TARGETS=(evloop-floor)

# ---- processes we start, and cleanup ----------------------------------------
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    [[ -n "$p" ]] && kill_tree "$p"
  done
}
# kill_tree PID: TERM the process and the children it has now, KILL what is left.
kill_tree() {
  local pid="$1" kids p i
  kill -0 "$pid" 2>/dev/null || return 0
  kids="$(ps -o pid= --ppid "$pid" 2>/dev/null || true)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  for p in $kids; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# One run at a time on a machine: the ports are fixed, and a second run's proxies and backends
# would fail to bind or take the first one's ports (and its CPU) mid-measurement.
exec 9>"${BENCH_LOCK:-/tmp/smartproxy-bench.lock}"
if ! flock -n 9; then
  log "another bench/run.sh holds ${BENCH_LOCK:-/tmp/smartproxy-bench.lock}; waiting for it (at most 1 h)"
  # processes a run starts inherit the lock's fd: one left running keeps the lock, hence the bound
  flock -w 3600 9 || { echo "run.sh: the lock is still held after 1 h (a leftover process?)" >&2; exit 1; }
fi

# ---- install peers ------------------------------------------------------------
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
[[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
command -v strace >/dev/null || need+=(strace)
command -v taskset >/dev/null || need+=(util-linux)
command -v ps >/dev/null || need+=(procps)
command -v ip >/dev/null || need+=(iproute2) # the nftables scenario's namespaces
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $INSTALL == 0 ]]; then echo "run.sh: missing ${need[*]} (and --no-install)" >&2; exit 1; fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$OUT/logs/apt.log" 2>&1
  apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$OUT/logs/apt.log" 2>&1
fi
command -v go >/dev/null || { echo "run.sh: go is required" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)"
# maxconns stops at loadgen's own cap: the fd limit less a margin
if [[ "$(ulimit -n)" == unlimited ]]; then MAX_CONNS="${MAX_CONNS:-100000}"; else MAX_CONNS="${MAX_CONNS:-$(( $(ulimit -n) - 100 ))}"; fi
log "open files limit: $(ulimit -n); out: $OUT"

# ---- build --------------------------------------------------------------------
log "building smartproxy CLI and bench tools"
(cd "$REPO" && go build -o "$OUT/bin/smartproxy" ./cmd/smartproxy)
(cd "$REPO" && go build -o "$OUT/bin/" ./bench/cmd/backend ./bench/cmd/loadgen ./bench/cmd/benchreport ./bench/cmd/profproxy \
  ./bench/cmd/evhttp)
BIN="$OUT/bin"
"$BIN/backend" -gencert "$OUT/cert"
CERT="$OUT/cert/cert.pem" KEY="$OUT/cert/key.pem" COMBINED="$OUT/cert/combined.pem"

# ---- ports ------------------------------------------------------------------------
# backends:  19001 echo (spliced io.Copy)  19004 light echo (no buffer while idle)
#            19002 TLS 1.3 echo             19003 HTTP 1 KiB (POST bodies checked)
#            19005 the same HTTP server over TLS 1.3 (https's direct target)
# proxies:   18001 -> 19001   18002 -> 19004   18443 SNI echo.bench.test -> 19002
#            18444 TLS 1.3 terminate -> 19001   18080 HTTP (parsed, keep-alive upstream) -> 19003
#            18445 TLS 1.3 terminate, HTTP (parsed, keep-alive upstream) -> 19003
H=127.0.0.1
PROXY_PORTS=$H:18001,$H:18002,$H:18443,$H:18444,$H:18080,$H:18445 # every proxy's, waited for at start

# ---- configs ------------------------------------------------------------------------
# every proxy's config, written into $OUT and checked (smartproxy -check, nginx -t, haproxy -c)
# shellcheck source=bench/configs.sh
source "$BENCH_DIR/configs.sh"

# ---- backends (core 0, for the whole run) ------------------------------------------
taskset -c $LOAD_CPU "$BIN/backend" -cert "$OUT/cert" -echo $H:19001 -light $H:19004 -tls $H:19002 -http $H:19003 \
  -https $H:19005 >"$OUT/logs/backend.log" 2>&1 &
PIDS+=($!)
"$BIN/loadgen" -wait $H:19001,$H:19002,$H:19003,$H:19004,$H:19005

# ---- proxies -------------------------------------------------------------------------
PROXY_PID=""
start_proxy() { # name
  case "$1" in
    smartproxy|smartproxy-nethttp)
      GOMAXPROCS=1 taskset -c $PROXY_CPU "$BIN/smartproxy" -config "$OUT/$1.json" -log-level warn \
        >>"$OUT/logs/$1.log" 2>&1 &
      PROXY_PID=$!; PIDS+=($PROXY_PID)
      "$BIN/loadgen" -wait "$PROXY_PORTS" ;;
    smartproxy-gr)
      # the same config through the library with Options.Engine = EngineGoroutines
      GOMAXPROCS=1 taskset -c $PROXY_CPU "$BIN/profproxy" -config "$OUT/smartproxy.json" -engine goroutines -pprof "" \
        >>"$OUT/logs/smartproxy-gr.log" 2>&1 &
      PROXY_PID=$!; PIDS+=($PROXY_PID)
      "$BIN/loadgen" -wait "$PROXY_PORTS" ;;
    haproxy|haproxy-splice)
      taskset -c $PROXY_CPU haproxy -db -f "$OUT/$1.cfg" >>"$OUT/logs/$1.log" 2>&1 &
      PROXY_PID=$!; PIDS+=($PROXY_PID)
      "$BIN/loadgen" -wait "$PROXY_PORTS" ;;
    nginx)
      taskset -c $PROXY_CPU nginx -e "$OUT/logs/nginx-error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" \
        -g 'daemon off;' >>"$OUT/logs/nginx.log" 2>&1 &
      PROXY_PID=$!; PIDS+=($PROXY_PID)
      "$BIN/loadgen" -wait "$PROXY_PORTS" ;;
    evloop-floor)
      GOMAXPROCS=1 taskset -c $PROXY_CPU "$BIN/evhttp" -listen $H:18080 -target $H:19003 \
        >>"$OUT/logs/evloop-floor.log" 2>&1 &
      PROXY_PID=$!; PIDS+=($PROXY_PID)
      "$BIN/loadgen" -wait $H:18080 ;;
    direct) PROXY_PID="" ;;
  esac
}
stop_proxy() {
  if [[ -n "$PROXY_PID" ]]; then
    kill_tree "$PROXY_PID"
    forget "$PROXY_PID"
  fi
  PROXY_PID=""
}
forget() { # drop a reaped PID from the cleanup list
  local keep=() p
  for p in "${PIDS[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# addr_for SCENARIO TARGET -> address loadgen talks to
addr_for() {
  local direct=$2
  case "$1" in
    bulk|connrate) [[ $direct == direct ]] && echo $H:19001 || echo $H:18001 ;;
    idle-rss|maxconns) [[ $direct == direct ]] && echo $H:19004 || echo $H:18002 ;;
    sni) [[ $direct == direct ]] && echo $H:19002 || echo $H:18443 ;;
    tlsterm-*) [[ $direct == direct ]] && echo $H:19002 || echo $H:18444 ;;
    http|http-post) [[ $direct == direct ]] && echo $H:19003 || echo $H:18080 ;;
    https) [[ $direct == direct ]] && echo $H:19005 || echo $H:18445 ;;
  esac
}
args_for() {
  case "$1" in
    bulk) echo "-streams 4 -mib $BULK_MIB" ;;
    connrate) echo "-c $CONC -duration $DUR -warmup $WARM" ;;
    sni) echo "-c $CONC -duration $DUR -warmup $WARM -sni echo.bench.test -ca $CERT" ;;
    tlsterm-*) echo "-c $CONC -duration $DUR -warmup $WARM -sni term.bench.test -ca $CERT" ;;
    http|http-post) echo "-c $HTTP_CONC -duration $DUR -warmup $WARM" ;;
    https) echo "-c $HTTP_CONC -duration $DUR -warmup $WARM -sni term.bench.test -ca $CERT -cipher $HTTPS_CIPHER" ;;
    idle-rss) echo "-n $IDLE_N -settle $IDLE_SETTLE" ;;
    maxconns) echo "-max $MAX_CONNS" ;;
  esac
}
targets_for() {
  case "$1" in
    bulk) echo "${TCP_TARGETS[*]} haproxy-splice" ;;
    http|http-post) echo "${HTTP_TARGETS[*]} ${FLOOR_TARGETS[*]}" ;;
    https) echo "${HTTP_TARGETS[*]}" ;;
    *) echo "${TCP_TARGETS[*]}" ;;
  esac
}

run_one() { # scenario target round
  local s=$1 t=$2 r=$3 pid_arg=0 line
  start_proxy "$t"
  [[ -n "$PROXY_PID" ]] && pid_arg=$PROXY_PID
  # shellcheck disable=SC2046
  line="$(taskset -c $LOAD_CPU "$BIN/loadgen" -scenario "$s" -addr "$(addr_for "$s" "$t")" -label "$t" -round "$r" \
    -pid "$pid_arg" -proxy-cpu $PROXY_CPU -load-cpu $LOAD_CPU $(args_for "$s") 2>>"$OUT/logs/loadgen.log")" || true
  stop_proxy
  if [[ -z "$line" ]]; then
    line="{\"scenario\":\"$s\",\"target\":\"$t\",\"round\":$r,\"valid\":false,\"errors\":1,\"error_sample\":\"loadgen produced no result (see logs/loadgen.log)\"}"
  fi
  echo "$line" >>"$RESULTS"
  log "$s round $r $t: $(echo "$line" | sed -E 's/.*"valid":([a-z]+).*"rate":([0-9.e+-]+).*"unit":"([^"]*)".*/valid=\1 \2 \3/')"
}

# ---- smartproxy's HTTP ports really go through its HTTP layer -------------------------
# A plain L4 forward would pass the request through untouched; the HTTP layer adds
# X-Forwarded-For, which the backend's /forwarded endpoint reports back. Checked on the
# cleartext and the TLS port, for every smartproxy target of the HTTP scenarios.
# smartproxy (the CLI defaults) must also refuse an obs-fold header line with 400: the fast
# path's strict parser (internal/h1parse) does, net/http's server does not, so a build whose
# fast path is off is caught here; smartproxy-nethttp must take it (its fast path is off).
http_checks() {
  local t fwd https_fwd fold
  for t in "${HTTP_TARGETS[@]}"; do
    if [[ ($t == haproxy || $t == nginx) && $PEER_FWD == 1 ]]; then
      # Like for like (configs.sh, PEER_FWD): the peers add the forwarding fields too.
      start_proxy "$t"
      fwd="$("$BIN/loadgen" -scenario http -addr $H:18080 -get /forwarded 2>>"$OUT/logs/loadgen.log" || true)"
      stop_proxy
      if [[ "$fwd" != "x-forwarded-for=127.0.0.1" ]]; then
        echo "run.sh: $t does not add X-Forwarded-For with PEER_FWD=1 (backend saw: '${fwd}')" >&2
        exit 1
      fi
      log "http check: $t adds the forwarding fields ($fwd seen by the backend)"
      continue
    fi
    [[ $t == smartproxy* ]] || continue
    start_proxy "$t"
    fwd="$("$BIN/loadgen" -scenario http -addr $H:18080 -get /forwarded 2>>"$OUT/logs/loadgen.log" || true)"
    https_fwd="$("$BIN/loadgen" -scenario https -addr $H:18445 -sni term.bench.test -ca "$CERT" -cipher $HTTPS_CIPHER \
      -get /forwarded 2>>"$OUT/logs/loadgen.log" || true)"
    fold="$(exec 3<>/dev/tcp/$H/18080
            printf 'GET /1k HTTP/1.1\r\nHost: bench.test\r\nX-Fold: a\r\n b\r\nConnection: close\r\n\r\n' >&3
            timeout 5 head -1 <&3 | tr -d '\r' || true)"
    stop_proxy
    if [[ "$fwd" != "x-forwarded-for=127.0.0.1" || "$https_fwd" != "x-forwarded-for=127.0.0.1" ]]; then
      echo "run.sh: $t's HTTP routes did not go through its HTTP layer (backend saw: '${fwd}' on 18080, '${https_fwd}' on 18445)" >&2
      exit 1
    fi
    if [[ $t == smartproxy && "$fold" != "HTTP/1.1 400 "* ]]; then
      echo "run.sh: smartproxy answered an obs-fold request with '$fold', not 400: is the fast path on by default?" >&2
      exit 1
    fi
    if [[ $t == smartproxy-nethttp && "$fold" == "HTTP/1.1 400 "* ]]; then
      echo "run.sh: smartproxy-nethttp refused an obs-fold request with 400: is \"httpFastPath\": false honoured?" >&2
      exit 1
    fi
    log "http check: $t parses HTTP on 18080 and 18445 ($fwd seen by the backend); obs-fold: $fold"
  done
}
for s in "${SCENARIOS[@]}"; do
  if [[ " ${HTTP_SCENARIOS[*]} " == *" $s "* ]]; then http_checks; break; fi
done

# maxconns over several proxy processes sharing the port with SO_REUSEPORT (MAXCONNS_PROCS)
# shellcheck source=bench/maxconns-multi.sh
source "$BENCH_DIR/maxconns-multi.sh"

# ---- rounds ------------------------------------------------------------------------------
for s in "${SCENARIOS[@]}"; do
  if [[ $s == nftables ]]; then # its own namespaces and targets, in one run
    bash "$BENCH_DIR/nftables.sh" "$OUT" "$BIN" "$ROUNDS" "$DUR" "$WARM" "$BULK_MIB" "$CONC" >"$OUT/nftables.md"
    continue
  fi
  read -r -a tg <<<"$(targets_for "$s")"
  rounds=$ROUNDS
  [[ $s == idle-rss || $s == maxconns ]] && rounds=$MEM_ROUNDS
  [[ $s == maxconns && $MAXCONNS_SINGLE == 0 ]] && rounds=0
  for ((r = 1; r <= rounds; r++)); do
    # rotate the order each round so no target always runs first or last
    n=${#tg[@]}
    for ((i = 0; i < n; i++)); do
      run_one "$s" "${tg[$(((i + r - 1) % n))]}" "$r"
    done
  done
  # after the single-process runs, so that their numbers stay comparable with earlier runs
  if [[ $s == maxconns ]] && (( MAXCONNS_PROCS > 1 )); then maxconns_multi; fi
done

# A body nginx spilled to a file costs it a disk write per request: not what http-post compares.
if grep -q 'buffered to a temporary file' "$OUT/logs/nginx-error.log" 2>/dev/null; then
  log "warning: nginx buffered request bodies to temporary files (logs/nginx-error.log): raise client_body_buffer_size"
fi

# ---- data path check: does smartproxy splice? (benchmarking.md §5) -----------------------
if [[ " ${SCENARIOS[*]} " == *" bulk "* ]]; then
  log "data path check: strace -f -c on smartproxy during a 4 x 64 MiB bulk transfer"
  start_proxy smartproxy
  strace -f -c -e trace=splice,read,write,readv,writev,recvfrom,sendto,recvmsg,sendmsg -o "$OUT/logs/strace-smartproxy.txt" \
    -p "$PROXY_PID" 2>>"$OUT/logs/strace.log" &
  STRACE_PID=$!; PIDS+=($STRACE_PID)
  sleep 1
  taskset -c $LOAD_CPU "$BIN/loadgen" -scenario bulk -addr $H:18001 -label strace -streams 4 -mib 64 >"$OUT/logs/strace-bulk.json" 2>>"$OUT/logs/loadgen.log" || true
  kill -INT "$STRACE_PID" 2>/dev/null || true
  wait "$STRACE_PID" 2>/dev/null || true
  forget "$STRACE_PID"
  stop_proxy
fi

# ---- report ------------------------------------------------------------------------------
{
  echo "## Results ($( [[ $QUICK == 1 ]] && echo quick || echo full ) run, $(date -u +%Y-%m-%dT%H:%MZ), rounds: $ROUNDS, window: $DUR)"
  echo
  echo "Machine: $(nproc) cores, $(uname -r); proxy on core $PROXY_CPU, load generator and backends on core $LOAD_CPU;"
  echo "$(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3), smartproxy $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet 2>/dev/null || echo '+dirty'), $(go version | cut -d' ' -f3)."
  echo "Medians over valid runs; a run with any verification error is counted invalid and never used as a number."
  if [[ $PEER_FWD == 1 ]]; then
    echo "HTTP peers add the forwarding fields smartproxy adds (PEER_FWD=1: X-Forwarded-For, X-Real-IP, X-Forwarded-Host, X-Forwarded-Proto, Forwarded)."
  else
    echo "HTTP peers at their defaults (PEER_FWD=0): they add no forwarding field; smartproxy adds five."
  fi
  "$BIN/benchreport" "$RESULTS"
  if [[ -f "$OUT/nftables.md" ]]; then echo; cat "$OUT/nftables.md"; fi
  if [[ -f "$OUT/maxconns-multi.md" ]]; then echo; cat "$OUT/maxconns-multi.md"; fi
  if [[ -f "$OUT/logs/strace-smartproxy.txt" ]]; then
    echo
    echo "### data path: syscalls of smartproxy during a 4 x 64 MiB bulk echo (strace -f -c)"
    echo
    echo '```'
    cat "$OUT/logs/strace-smartproxy.txt"
    echo '```'
    echo "bulk run under strace: $(cut -c1-200 "$OUT/logs/strace-bulk.json")"
  fi
} | tee "$OUT/report.md"
log "report: $OUT/report.md"
