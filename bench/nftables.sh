#!/usr/bin/env bash
# The nftables scenario: TCP bulk throughput and new connections/s from a
# client namespace to a backend namespace through the proxy host (this
# script's own network namespace), three ways in one run:
#   direct      client -> backend, routed by the proxy host (no NAT, no proxy)
#   nftables    client -> proxy:18001, a route with forwardingEngine "nftables" (kernel DNAT + masquerade)
#   smartproxy  client -> proxy:18002, the same target through the user-space proxy (GOMAXPROCS=1)
# One smartproxy process serves both routes. Run by bench/run.sh (--only nftables);
# by hand: bench/nftables.sh OUT BIN ROUNDS DUR WARM BULK_MIB CONC (BIN from run.sh's build).
# It re-executes itself under `unshare -Urnm`, so it needs no root and leaves the host alone.
set -euo pipefail
if [[ "${NFT_BENCH_INSIDE:-}" != 1 ]]; then
  NFT_BENCH_INSIDE=1 exec unshare -Urnm -- bash "$0" "$@"
fi
OUT=$1 BIN=$2 ROUNDS=$3 DUR=$4 WARM=$5 BULK_MIB=$6 CONC=$7
LOAD_CPU=0 PROXY_CPU=1
RES="$OUT/nftables.jsonl"
: >"$RES"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# ---- topology: cli (10.200.1.1) <-> this namespace (10.200.1.2 | 10.200.2.1) <-> bkd (10.200.2.2)
mount -t tmpfs none /run && mkdir -p /run/netns
ip netns add cli && ip netns add bkd
ip link set lo up; ip -n cli link set lo up; ip -n bkd link set lo up
ip -n cli link add c0 type veth peer name p0 netns $$
ip link add p1 type veth peer name b0 netns bkd
ip -n cli addr add 10.200.1.1/24 dev c0; ip addr add 10.200.1.2/24 dev p0
ip addr add 10.200.2.1/24 dev p1; ip -n bkd addr add 10.200.2.2/24 dev b0
ip -n cli link set c0 up; ip link set p0 up; ip link set p1 up; ip -n bkd link set b0 up
ip -n cli route add default via 10.200.1.2; ip -n bkd route add default via 10.200.2.1
echo 1 >/proc/sys/net/ipv4/ip_forward
# connrate opens ~10^4 connections a round from one client address: reuse
# TIME_WAIT ports, and let conntrack forget closed connections quickly, or
# later rounds measure port and table exhaustion instead of forwarding.
# (The proxy host too: the user-space proxy dials the backend from it.)
for ns in cli bkd; do
  ip netns exec $ns sh -c 'echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse; echo "1024 65000" >/proc/sys/net/ipv4/ip_local_port_range'
done
echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse; echo "1024 65000" >/proc/sys/net/ipv4/ip_local_port_range
echo 1 >/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait 2>/dev/null || true

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
ip netns exec bkd taskset -c $LOAD_CPU "$BIN/backend" -echo 10.200.2.2:19001 >"$OUT/logs/nft-backend.log" 2>&1 &
PIDS+=($!)
cat >"$OUT/smartproxy-nft.json" <<JSON
{
  "listenAddress": "10.200.1.2",
  "maxConnectionsPerIP": 100000000,
  "connectionRateLimitPerMinute": 100000000,
  "gracefulShutdownTimeout": 1000,
  "routes": [
    {"name": "kernel", "match": {"ports": 18001},
     "action": {"type": "forward", "forwardingEngine": "nftables", "targets": [{"host": "10.200.2.2", "port": 19001}]}},
    {"name": "user", "match": {"ports": 18002},
     "action": {"type": "forward", "targets": [{"host": "10.200.2.2", "port": 19001}]}}
  ]
}
JSON
GOMAXPROCS=1 taskset -c $PROXY_CPU "$BIN/smartproxy" -config "$OUT/smartproxy-nft.json" -log-level warn \
  >"$OUT/logs/nft-smartproxy.log" 2>&1 &
PROXY=$!
PIDS+=($PROXY)
ip netns exec cli "$BIN/loadgen" -wait 10.200.2.2:19001,10.200.1.2:18002,10.200.1.2:18001

addr_of() { case "$1" in direct) echo 10.200.2.2:19001 ;; nftables) echo 10.200.1.2:18001 ;; smartproxy) echo 10.200.1.2:18002 ;; esac; }
targets=(direct nftables smartproxy)
for s in bulk connrate; do
  args="-c $CONC -duration $DUR -warmup $WARM"
  [[ $s == bulk ]] && args="-streams 4 -mib $BULK_MIB"
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < 3; i++)); do
      t=${targets[$(((i + r - 1) % 3))]}
      pid=0
      [[ $t == smartproxy ]] && pid=$PROXY
      # shellcheck disable=SC2086
      line="$(ip netns exec cli taskset -c $LOAD_CPU "$BIN/loadgen" -scenario $s -addr "$(addr_of $t)" -label $t -round $r \
        -pid $pid -proxy-cpu $PROXY_CPU -load-cpu $LOAD_CPU $args 2>>"$OUT/logs/nft-loadgen.log")" || true
      [[ -n "$line" ]] || line="{\"scenario\":\"$s\",\"target\":\"$t\",\"round\":$r,\"valid\":false}"
      echo "$line" >>"$RES"
      log "nftables $s round $r $t: $(echo "$line" | sed -E 's/.*"valid":([a-z]+).*"rate":([0-9.e+-]+).*"unit":"([^"]*)".*/valid=\1 \2 \3/')"
    done
  done
done
# The kernel route really was forwarded by the kernel: its counters moved.
nft list table inet smartproxy >"$OUT/logs/nft-ruleset.txt" 2>&1 || true

# ---- report: medians of valid runs, ratios to direct
echo "### nftables: kernel route vs user-space route vs direct (namespaces, one run)"
echo
echo "| scenario | unit | direct | nftables route | × direct | user-space route | × direct | valid runs (d/n/u) |"
echo "|---|---|---|---|---|---|---|---|"
for s in bulk connrate; do
  awk -v s="$s" '
    function med(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
      return n == 0 ? 0 : (n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2) }
    index($0, "\"scenario\":\"" s "\"") && index($0, "\"valid\":true") {
      match($0, /"target":"[a-z]+"/); t = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /"rate":[0-9.e+-]+/); v = substr($0, RSTART + 7, RLENGTH - 7) + 0
      match($0, /"unit":"[^"]*"/); unit = substr($0, RSTART + 8, RLENGTH - 9)
      n[t]++; vals[t, n[t]] = v }
    END {
      split("direct nftables smartproxy", ts, " ")
      for (k = 1; k <= 3; k++) { t = ts[k]; m = n[t] + 0; for (i = 1; i <= m; i++) a[i] = vals[t, i]; md[t] = med(a, m) }
      d = md["direct"]
      printf "| %s | %s | %.4g | %.4g | %.2f | %.4g | %.2f | %d/%d/%d |\n", s, unit, d, md["nftables"], d ? md["nftables"] / d : 0,
        md["smartproxy"], d ? md["smartproxy"] / d : 0, n["direct"], n["nftables"], n["smartproxy"] }' "$RES"
done
