package smartproxy

import "maps"

// The builder's HTTP actions. Each marks the route as an HTTP route, as
// the matching RouteAction field does (see ActionOptions).

// BackendProtocol sets the HTTP version spoken to the backends
// (action.options.backendProtocol).
func (b *RouteBuilder) BackendProtocol(p BackendProtocol) *RouteBuilder {
	b.options().BackendProtocol = p
	return b
}

// KeepHostHeader forwards the client's Host header instead of the
// target's (action.options.rewriteHostHeader false).
func (b *RouteBuilder) KeepHostHeader() *RouteBuilder {
	keep := false
	b.options().RewriteHostHeader = &keep
	return b
}

func (b *RouteBuilder) options() *ActionOptions {
	if b.r.Action.Options == nil {
		b.r.Action.Options = &ActionOptions{}
	}
	return b.r.Action.Options
}

// RequestHeader sets a header on requests sent to the backend; value is
// a template such as "{clientIp}", and one that expands to "" removes
// the header.
func (b *RouteBuilder) RequestHeader(name, value string) *RouteBuilder {
	setHeader(&b.headers().Request, name, value)
	return b
}

// ResponseHeader sets a header on responses sent to the client, as
// RequestHeader does on requests.
func (b *RouteBuilder) ResponseHeader(name, value string) *RouteBuilder {
	setHeader(&b.headers().Response, name, value)
	return b
}

// setHeader sets name in *m, making the map on first use.
func setHeader(m *map[string]string, name, value string) {
	if *m == nil {
		*m = make(map[string]string)
	}
	(*m)[name] = value
}

func (b *RouteBuilder) headers() *HeaderActions {
	if b.r.Action.Headers == nil {
		b.r.Action.Headers = &HeaderActions{}
	}
	return b.r.Action.Headers
}

// Rewrite replaces the first match of pattern, a regular expression over
// the escaped path with its query, by target (see URLRewrite).
func (b *RouteBuilder) Rewrite(pattern, target string) *RouteBuilder {
	b.r.Action.Rewrite = &URLRewrite{Pattern: pattern, Target: target}
	return b
}

// Redirect answers requests with status (0 means 301) and a Location
// built from the template to, e.g. "https://{domain}{path}"; the route
// then needs no target.
func (b *RouteBuilder) Redirect(to string, status int) *RouteBuilder {
	b.r.Action.Redirect = &Redirect{To: to, Status: status}
	return b
}

// WebSocket allows (true) or refuses with 403 (false) WebSocket upgrades
// on the route; without it they are allowed.
func (b *RouteBuilder) WebSocket(enabled bool) *RouteBuilder {
	b.r.Action.WebSocket = &WebSocketOptions{Enabled: &enabled}
	return b
}

// cloneHTTPAction gives a built route its own copies of the HTTP action
// blocks, so that later builder calls do not change it.
func cloneHTTPAction(a *RouteAction) {
	if a.Options != nil {
		o := *a.Options
		a.Options = &o
	}
	if a.Headers != nil {
		a.Headers = &HeaderActions{Request: maps.Clone(a.Headers.Request), Response: maps.Clone(a.Headers.Response)}
	}
	if a.Rewrite != nil {
		rw := *a.Rewrite
		a.Rewrite = &rw
	}
	if a.Redirect != nil {
		rd := *a.Redirect
		a.Redirect = &rd
	}
	if a.WebSocket != nil {
		ws := *a.WebSocket
		a.WebSocket = &ws
	}
}
