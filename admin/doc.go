// Package admin serves a proxy's admin API and live dashboard over HTTP:
// /healthz, /readyz, Prometheus /metrics, GET /routes, /connections
// (paged), /targets and /stats, POST /reload, /debug/pprof/, and at / a
// single embedded page that polls /stats every second.
//
// The package does not import the proxy: it reports on any Source, which
// smartproxy.Proxy.AdminSource provides. Start refuses a non-loopback
// address unless a bearer token is set; with a token, every endpoint but
// /healthz, /readyz and the page's static files requires it (401 when
// missing, 403 when wrong). Without one, only loopback Host names and
// same-origin POSTs are answered, so that a web page in the operator's
// browser can neither rebind a name to the API nor post a reload to it.
package admin
