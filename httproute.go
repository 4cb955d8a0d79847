package smartproxy

import "errors"

// compileHTTP validates the HTTP parts of a route. (Placeholder until the
// HTTP layer lands: refuses them rather than ignoring them.)
func (v *routeValidator) compileHTTP(r *Route) {
	m, a := &r.Match, &r.Action
	if m.Path != "" || len(m.Headers) > 0 || len(m.Method) > 0 || a.Options != nil || a.Headers != nil ||
		a.Rewrite != nil || a.Redirect != nil || a.WebSocket != nil {
		v.fail("action", errors.New("HTTP features are not supported yet"))
	}
	for _, t := range a.Targets {
		if t.Match != nil {
			v.fail("action.targets.match", errors.New("not supported yet"))
		}
	}
}
