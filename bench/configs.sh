# Sourced by run.sh: writes every proxy's config into $OUT and checks it. The same ports
# and backends for every proxy (run.sh's "ports" section); uses H, OUT, BIN, CERT, KEY,
# COMBINED and HTTPS_CIPHER from run.sh. smartproxy.json is at the CLI's defaults (HTTP/1.1
# on the fast path); smartproxy-nethttp.json is the same with "httpFastPath": false (HTTP/1.1
# on net/http's server).
# shellcheck shell=bash

# smartproxy_config EXTRA: the config, with EXTRA (top-level keys, each ending in a comma) added.
smartproxy_config() {
  cat <<JSON
{
  "listenAddress": "$H", $1
  "maxConnectionsPerIP": 1000000000,
  "connectionRateLimitPerMinute": 1000000000,
  "gracefulShutdownTimeout": 1000,
  "routes": [
    {"name": "echo", "match": {"ports": 18001},
     "action": {"type": "forward", "targets": [{"host": "$H", "port": 19001}]}},
    {"name": "light", "match": {"ports": 18002},
     "action": {"type": "forward", "targets": [{"host": "$H", "port": 19004}]}},
    {"name": "sni", "match": {"ports": 18443, "domains": ["echo.bench.test"]},
     "action": {"type": "forward", "tls": {"mode": "passthrough"}, "targets": [{"host": "$H", "port": 19002}]}},
    {"name": "tlsterm", "match": {"ports": 18444},
     "action": {"type": "forward",
                "tls": {"mode": "terminate", "versions": ["TLSv1.3"], "certificate": {"certFile": "$CERT", "keyFile": "$KEY"}},
                "targets": [{"host": "$H", "port": 19001}]}},
    {"name": "http", "match": {"ports": 18080, "domains": ["*"]},
     "action": {"type": "forward", "targets": [{"host": "$H", "port": 19003}]}},
    {"name": "https", "match": {"ports": 18445, "domains": ["*"]},
     "action": {"type": "forward",
                "tls": {"mode": "terminate", "versions": ["TLSv1.3"], "certificate": {"certFile": "$CERT", "keyFile": "$KEY"}},
                "targets": [{"host": "$H", "port": 19003}]}}
  ]
}
JSON
}
smartproxy_config "" >"$OUT/smartproxy.json"
smartproxy_config '"httpFastPath": false,' >"$OUT/smartproxy-nethttp.json"
for f in smartproxy smartproxy-nethttp; do
  "$BIN/smartproxy" -config "$OUT/$f.json" -check >>"$OUT/logs/smartproxy-check.log" 2>&1 ||
    { cat "$OUT/logs/smartproxy-check.log" >&2; exit 1; }
done

# PEER_FWD=0 (the default): the peers' HTTP ports at their defaults, which add no forwarding
# field (issue 17's target was set against them), while smartproxy adds five to every proxied
# request. PEER_FWD=1: like for like, the peers add the same ones (X-Forwarded-For, X-Real-IP,
# X-Forwarded-Host, X-Forwarded-Proto, Forwarded), so that every proxy does the same work per
# request and the backend parses the same heads; run.sh then checks that each peer's backend
# sees X-Forwarded-For.
PEER_FWD="${PEER_FWD:-0}"
haproxy_fwd() { # proto -> HAProxy's rules for the forwarding fields
  [[ $PEER_FWD == 1 ]] || return 0
  cat <<RULES
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Proto $1
    http-request set-header Forwarded "for=%[src];host=\\"%[req.hdr(host)]\\";proto=$1"
RULES
}
nginx_fwd() { # nginx's directives for the forwarding fields
  [[ $PEER_FWD == 1 ]] || return 0
  cat <<'DIRS'
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Forwarded "for=$remote_addr;host=\"$host\";proto=$scheme";
DIRS
}

cat >"$OUT/haproxy.cfg" <<CFG
global
    nbthread 1
    log stderr format short local0 warning
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe_echo
    bind $H:18001
    default_backend be_echo
frontend fe_light
    bind $H:18002
    default_backend be_light
frontend fe_sni
    bind $H:18443
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend be_tls if { req_ssl_sni -i echo.bench.test }
frontend fe_tlsterm
    bind $H:18444 ssl crt $COMBINED ssl-min-ver TLSv1.3
    default_backend be_echo
frontend fe_http
    mode http
    bind $H:18080
    timeout http-keep-alive 1h
    timeout http-request 10s
$(haproxy_fwd http)
    default_backend be_http
frontend fe_https
    mode http
    bind $H:18445 ssl crt $COMBINED ssl-min-ver TLSv1.3 ciphersuites $HTTPS_CIPHER alpn http/1.1
    timeout http-keep-alive 1h
    timeout http-request 10s
$(haproxy_fwd https)
    default_backend be_http
backend be_echo
    server s1 $H:19001
backend be_light
    server s1 $H:19004
backend be_tls
    server s1 $H:19002
backend be_http
    mode http
    server s1 $H:19003
CFG

cat >"$OUT/nginx/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $OUT/nginx/nginx.pid;
error_log $OUT/logs/nginx-error.log warn;
events { worker_connections 20000; }
stream {
    server { listen $H:18001; proxy_pass $H:19001; proxy_half_close on; }
    server { listen $H:18002; proxy_pass $H:19004; proxy_half_close on; }
    map \$ssl_preread_server_name \$sni_up { echo.bench.test $H:19002; default $H:9; }
    server { listen $H:18443; ssl_preread on; proxy_pass \$sni_up; }
    server {
        listen $H:18444 ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.3;
        proxy_pass $H:19001;
        proxy_half_close on;
    }
}
http {
    access_log off;
    # http-post: nginx buffers request bodies (proxy_request_buffering on) in 8 KiB by default and
    # spills larger ones to a temporary file; 32 KiB keeps the 16 KiB bodies in memory.
    client_body_buffer_size 32k;
    client_body_temp_path $OUT/nginx/body;
    proxy_temp_path $OUT/nginx/proxy;
    fastcgi_temp_path $OUT/nginx/fastcgi;
    uwsgi_temp_path $OUT/nginx/uwsgi;
    scgi_temp_path $OUT/nginx/scgi;
    upstream be_http { server $H:19003; keepalive 64; keepalive_requests 1000000; keepalive_timeout 1h; }
    server {
        listen $H:18080;
        keepalive_requests 1000000;
        keepalive_timeout 1h;
        location / {
            proxy_pass http://be_http;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
$(nginx_fwd)
        }
    }
    server {
        listen $H:18445 ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites $HTTPS_CIPHER;
        keepalive_requests 1000000;
        keepalive_timeout 1h;
        location / {
            proxy_pass http://be_http;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
$(nginx_fwd)
        }
    }
}
CFG
nginx -t -q -e "$OUT/logs/nginx-error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" 2>>"$OUT/logs/nginx-check.log" ||
  { cat "$OUT/logs/nginx-check.log" >&2; exit 1; }
haproxy -c -q -f "$OUT/haproxy.cfg" >>"$OUT/logs/haproxy-check.log" 2>&1 ||
  { cat "$OUT/logs/haproxy-check.log" >&2; exit 1; }
# The same HAProxy with splice(2) for TCP forwarding, as smartproxy does: a like-for-like
# peer for bulk (HAProxy does not splice by default). splice-auto barely splices on loopback
# (8 splice calls for 4 x 64 MiB under strace); splice-request/-response always do.
sed 's/^    mode tcp$/    mode tcp\n    option splice-request\n    option splice-response/' "$OUT/haproxy.cfg" >"$OUT/haproxy-splice.cfg"
grep -q 'option splice-response' "$OUT/haproxy-splice.cfg" || { echo "haproxy-splice.cfg: splicing not set" >&2; exit 1; }
haproxy -c -q -f "$OUT/haproxy-splice.cfg" >>"$OUT/logs/haproxy-check.log" 2>&1 ||
  { cat "$OUT/logs/haproxy-check.log" >&2; exit 1; }
