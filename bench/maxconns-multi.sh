# shellcheck shell=bash
# maxconns over several processes: sourced by bench/run.sh, which calls maxconns_multi once
# per run of the maxconns scenario when MAXCONNS_PROCS > 1 (see bench/README.md, "maxconns over
# several processes").
#
# The hard fd limit here is 20,000 per process and two fds hold one proxied connection, so one
# proxy process stops near 10,000. This mode starts MAXCONNS_PROCS proxy processes of one kind
# sharing one port with SO_REUSEPORT (the kernel spreads connections over their sockets),
# enough loadgen processes (each from its own 127/8 source address: one source/destination pair
# has only ~28,000 ephemeral ports) and enough light-echo backend processes (each on its own
# 127/8 address, the proxies balancing round-robin over them), opens connections until the
# first failure or MAXCONNS_TOTAL, and samples the proxies' summed RSS and fds while all of them
# are held, as idle-rss does (VmRSS of every proxy process and its children, before the load
# and with it).
#
#   smartproxy      MAXCONNS_PROCS CLI processes, config reusePort: true, GOMAXPROCS=1 each
#   smartproxy-gr   the same through profproxy with Options.Engine = EngineGoroutines (one loop each)
#   haproxy         MAXCONNS_PROCS haproxy processes (nbthread 1) with the same config: HAProxy
#                   binds with SO_REUSEPORT by default, so they share the port
#   nginx           one master, worker_processes MAXCONNS_PROCS, listen ... reuseport (one
#                   socket per worker), worker_rlimit_nofile = the fd cap
# Every proxy process is pinned to the proxy core, loadgens and backends to the load core.
#
#   env: MAXCONNS_PROCS (default 4; 1 = only the single-process run), MAXCONNS_TOTAL (default
#   MAXCONNS_PROCS x what one process can hold: the run ends at the first failure),
#   MAXCONNS_TARGETS (default "smartproxy smartproxy-gr haproxy nginx"),
#   MAXCONNS_SINGLE (default 1; 0 skips the single-process run of maxconns)

MAXCONNS_PROCS="${MAXCONNS_PROCS:-4}"
MAXCONNS_TARGETS="${MAXCONNS_TARGETS:-smartproxy smartproxy-gr haproxy nginx}"
MAXCONNS_SINGLE="${MAXCONNS_SINGLE:-1}"
MULTI_PORT=18102      # proxies, on $H
MULTI_BACKEND=19104   # backends, each on its own 127.0.0.(101+i)
MULTI_PIDS=()         # the running proxy processes

# multi_sizes: how many connections to aim for, and loadgen/backend processes to carry them.
multi_sizes() {
  local fds per_proc
  fds="$(ulimit -n)"
  [[ $fds == unlimited ]] && fds=1000000
  per_proc=$(( (fds - 100) / 2 ))       # one proxy process: two fds per connection
  MULTI_PER_LOADGEN=$(( fds - 500 ))    # one loadgen or backend: one fd per connection
  MULTI_TOTAL="${MAXCONNS_TOTAL:-$(( MAXCONNS_PROCS * per_proc ))}"
  MULTI_LOADGENS=$(( (MULTI_TOTAL + MULTI_PER_LOADGEN - 1) / MULTI_PER_LOADGEN ))
  MULTI_BACKENDS=$MULTI_LOADGENS
}

# multi_configs: the proxies' configs for this mode (one port, several backends).
multi_configs() {
  local i hosts="" servers="" upstream=""
  for ((i = 0; i < MULTI_BACKENDS; i++)); do
    hosts+="${hosts:+, }\"127.0.0.$((101 + i))\""
    servers+="    server s$i 127.0.0.$((101 + i)):$MULTI_BACKEND"$'\n'
    upstream+="        server 127.0.0.$((101 + i)):$MULTI_BACKEND;"$'\n'
  done
  cat >"$OUT/smartproxy-multi.json" <<JSON
{
  "listenAddress": "$H",
  "reusePort": true,
  "maxConnectionsPerIP": 1000000000,
  "connectionRateLimitPerMinute": 1000000000,
  "gracefulShutdownTimeout": 1000,
  "routes": [
    {"name": "light", "match": {"ports": $MULTI_PORT},
     "action": {"type": "forward", "targets": [{"host": [$hosts], "port": $MULTI_BACKEND}]}}
  ]
}
JSON
  "$BIN/smartproxy" -config "$OUT/smartproxy-multi.json" -check 2>>"$OUT/logs/smartproxy-check.log"
  cat >"$OUT/haproxy-multi.cfg" <<CFG
global
    nbthread 1
    log stderr format short local0 warning
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe_light
    bind $H:$MULTI_PORT
    default_backend be_light
backend be_light
    balance roundrobin
$servers
CFG
  haproxy -c -q -f "$OUT/haproxy-multi.cfg" >>"$OUT/logs/haproxy-check.log" 2>&1 ||
    { cat "$OUT/logs/haproxy-check.log" >&2; return 1; }
  mkdir -p "$OUT/nginx-multi"
  cat >"$OUT/nginx-multi/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes $MAXCONNS_PROCS;
worker_rlimit_nofile $(ulimit -n);
pid $OUT/nginx-multi/nginx.pid;
error_log $OUT/logs/nginx-multi-error.log warn;
events { worker_connections $(ulimit -n); }
stream {
    upstream be_light {
$upstream    }
    server { listen $H:$MULTI_PORT reuseport; proxy_pass be_light; proxy_half_close on; }
}
CFG
  nginx -t -q -e "$OUT/logs/nginx-multi-error.log" -p "$OUT/nginx-multi" -c "$OUT/nginx-multi/nginx.conf" \
    2>>"$OUT/logs/nginx-check.log" || { cat "$OUT/logs/nginx-check.log" >&2; return 1; }
}

# start_multi TARGET: MAXCONNS_PROCS proxy processes sharing $MULTI_PORT.
start_multi() {
  local i
  MULTI_PIDS=()
  case "$1" in
    smartproxy|smartproxy-gr)
      for ((i = 0; i < MAXCONNS_PROCS; i++)); do
        if [[ $1 == smartproxy ]]; then
          GOMAXPROCS=1 taskset -c $PROXY_CPU "$BIN/smartproxy" -config "$OUT/smartproxy-multi.json" -log-level warn \
            >>"$OUT/logs/$1-multi.log" 2>&1 &
        else
          GOMAXPROCS=1 taskset -c $PROXY_CPU "$BIN/profproxy" -config "$OUT/smartproxy-multi.json" -engine goroutines \
            -pprof "" >>"$OUT/logs/$1-multi.log" 2>&1 &
        fi
        MULTI_PIDS+=($!); PIDS+=($!)
      done ;;
    haproxy)
      for ((i = 0; i < MAXCONNS_PROCS; i++)); do
        taskset -c $PROXY_CPU haproxy -db -f "$OUT/haproxy-multi.cfg" >>"$OUT/logs/haproxy-multi.log" 2>&1 &
        MULTI_PIDS+=($!); PIDS+=($!)
      done ;;
    nginx)
      taskset -c $PROXY_CPU nginx -e "$OUT/logs/nginx-multi-error.log" -p "$OUT/nginx-multi" \
        -c "$OUT/nginx-multi/nginx.conf" -g 'daemon off;' >>"$OUT/logs/nginx-multi.log" 2>&1 &
      MULTI_PIDS+=($!); PIDS+=($!) ;;
  esac
  "$BIN/loadgen" -wait $H:$MULTI_PORT
  sleep 0.5 # every process bound: -wait saw the first one accept
}

stop_multi() {
  local p
  for p in "${MULTI_PIDS[@]}"; do kill_tree "$p"; forget "$p"; done
  MULTI_PIDS=()
}

# multi_sample: "RSS-KiB fds spread" summed over the proxy processes and their children (nginx's
# workers); spread is each process's fds (with its children's), joined by "/": how evenly the
# kernel spread the connections.
multi_sample() {
  local p c rss=0 fds=0 v n spread=""
  for p in "${MULTI_PIDS[@]}"; do
    n=0
    for c in $p $(ps -o pid= --ppid "$p" 2>/dev/null); do
      v="$(awk '/^VmRSS:/ {print $2}' "/proc/$c/status" 2>/dev/null || true)"
      rss=$(( rss + ${v:-0} ))
      v="$(find "/proc/$c/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
      n=$(( n + v ))
      [[ $1 == nginx && $c != "$p" ]] && spread+="${spread:+/}$v" # nginx: per worker
    done
    fds=$(( fds + n ))
    [[ $1 != nginx ]] && spread+="${spread:+/}$n"
  done
  echo "$rss $fds $spread"
}

# multi_one TARGET ROUND: one run; appends a result line (scenario maxconns-multi) and a table row.
multi_one() {
  local t=$1 r=$2 j per dir rss0 fds0 rss1 fds1 conns=0 errs=0 note="" line n waited per_conn valid spread
  dir="$OUT/multi-$t-$r"
  mkdir -p "$dir"
  start_multi "$t"
  read -r rss0 fds0 _ <<<"$(multi_sample "$t")"
  per=$(( (MULTI_TOTAL + MULTI_LOADGENS - 1) / MULTI_LOADGENS ))
  local lg=()
  for ((j = 0; j < MULTI_LOADGENS; j++)); do
    taskset -c $LOAD_CPU "$BIN/loadgen" -scenario maxconns -addr $H:$MULTI_PORT -label "$t" -round "$r" \
      -max "$per" -src "127.0.0.$((11 + j))" -ready "$dir/ready.$j" -release "$dir/release" \
      >"$dir/result.$j" 2>>"$OUT/logs/loadgen.log" &
    lg+=($!); PIDS+=($!)
  done
  # Wait until every loadgen holds its connections (or has ended).
  for ((waited = 0; waited < 6000; waited++)); do
    n=0
    for ((j = 0; j < MULTI_LOADGENS; j++)); do
      if [[ -s "$dir/ready.$j" ]] || ! kill -0 "${lg[$j]}" 2>/dev/null; then n=$((n + 1)); fi
    done
    [[ $n == "$MULTI_LOADGENS" ]] && break
    sleep 0.1
  done
  sleep "$IDLE_SETTLE" # let the proxies settle (park idle connections), as idle-rss does
  read -r rss1 fds1 spread <<<"$(multi_sample "$t")"
  touch "$dir/release"
  for j in "${lg[@]}"; do wait "$j" 2>/dev/null || true; forget "$j"; done
  stop_multi
  for ((j = 0; j < MULTI_LOADGENS; j++)); do
    line="$(cat "$dir/result.$j" 2>/dev/null || true)"
    n="$(sed -nE 's/.*"conns":([0-9]+).*/\1/p' <<<"$line")"
    conns=$(( conns + ${n:-0} ))
    n="$(sed -nE 's/.*"errors":([0-9]+).*/\1/p' <<<"$line")"
    errs=$(( errs + ${n:-0} ))
    n="$(sed -nE 's/.*"note":"([^"]*)".*/\1/p' <<<"$line" | sed -E 's/; proxy fds.*//')"
    [[ -z "$note" || "$note" == held* ]] && note="${n:-$note}"
  done
  valid=false per_conn=0
  if (( conns > 0 )); then
    valid=true
    per_conn="$(awk -v a="$rss0" -v b="$rss1" -v n="$conns" 'BEGIN {printf "%.2f", (b - a) / n}')"
  fi
  note="$(sed -E 's/\\u003e/>/g; s/\\u003c/</g; s/\\u0026/\&/g' <<<"$note" | tr -d '"\\|')" # JSON escapes out
  echo "{\"scenario\":\"maxconns-multi\",\"target\":\"$t\",\"round\":$r,\"valid\":$valid,\"errors\":$errs,\"procs\":$MAXCONNS_PROCS,\"loadgens\":$MULTI_LOADGENS,\"backends\":$MULTI_BACKENDS,\"conns\":$conns,\"rate\":$conns,\"unit\":\"conns\",\"rss_before_kib\":$rss0,\"rss_after_kib\":$rss1,\"rss_per_conn_kib\":$per_conn,\"fds_before\":$fds0,\"fds_after\":$fds1,\"fds_per_process\":\"$spread\",\"note\":\"$note\"}" >>"$RESULTS"
  printf '| %s | %d | %d | %s | %s → %s MiB | %s KiB | %s → %s (%s) | %s |\n' "$t" "$r" "$MAXCONNS_PROCS" \
    "$conns" "$((rss0 / 1024))" "$((rss1 / 1024))" "$per_conn" "$fds0" "$fds1" "$spread" "$note" >>"$OUT/maxconns-multi.md.rows"
  log "maxconns-multi round $r $t: $conns conns over $MAXCONNS_PROCS processes, $per_conn KiB/conn ($note)"
}

# maxconns_multi: every target of MAXCONNS_TARGETS, MEM_ROUNDS rounds, rotated; writes
# $OUT/maxconns-multi.md, which the report appends.
maxconns_multi() {
  local i r n bpids=() tg
  multi_sizes
  multi_configs || return 1
  log "maxconns-multi: $MAXCONNS_PROCS proxy processes, up to $MULTI_TOTAL conns, $MULTI_LOADGENS loadgens, $MULTI_BACKENDS backends"
  for ((i = 0; i < MULTI_BACKENDS; i++)); do
    taskset -c $LOAD_CPU "$BIN/backend" -light "127.0.0.$((101 + i)):$MULTI_BACKEND" >>"$OUT/logs/backend-multi.log" 2>&1 &
    bpids+=($!); PIDS+=($!)
  done
  for ((i = 0; i < MULTI_BACKENDS; i++)); do "$BIN/loadgen" -wait "127.0.0.$((101 + i)):$MULTI_BACKEND"; done
  : >"$OUT/maxconns-multi.md.rows"
  read -r -a tg <<<"$MAXCONNS_TARGETS"
  n=${#tg[@]}
  for ((r = 1; r <= MEM_ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do multi_one "${tg[$(((i + r - 1) % n))]}" "$r"; done
  done
  for i in "${bpids[@]}"; do kill_tree "$i"; forget "$i"; done
  {
    echo "### maxconns over $MAXCONNS_PROCS processes sharing the port (SO_REUSEPORT)"
    echo
    echo "Each row is one run: $MAXCONNS_PROCS proxy processes on core $PROXY_CPU (nginx: $MAXCONNS_PROCS workers),"
    echo "$MULTI_LOADGENS loadgens and $MULTI_BACKENDS backends on core $LOAD_CPU, connections opened until the first failure"
    echo "or $MULTI_TOTAL; RSS and fds summed over every proxy process, sampled $IDLE_SETTLE after all connections were"
    echo "open, while all were held."
    echo
    echo "| target | round | processes | conns held | proxies' RSS before → after | RSS per conn | proxy fds before → after (per process) | what stopped it |"
    echo "|---|---|---|---|---|---|---|---|"
    sort -t'|' -k2,2 -k3,3n "$OUT/maxconns-multi.md.rows"
  } >"$OUT/maxconns-multi.md"
}
