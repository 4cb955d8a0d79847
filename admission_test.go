package smartproxy

import (
	"errors"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// domainChecker refuses connections for one domain, on top of the default.
type domainChecker struct {
	DefaultSecurityChecker
	refuse string
}

func (c domainChecker) CheckConnection(rc *RouteContext) error {
	if rc.Domain == c.refuse {
		return &RejectError{Reason: RejectNotAllowed, Route: rc.RouteName, IP: rc.ClientIP, Err: errors.New("domain refused")}
	}
	return c.DefaultSecurityChecker.CheckConnection(rc)
}

// A terminated connection admitted for its SNI is not admitted for every
// domain of its route: a request whose Host is another of the route's
// domains runs the connection checks again, so a checker that decides by
// domain cannot be fronted (SNI a.test, Host b.test).
func TestAdmissionCoversOnlyItsDomain(t *testing.T) {
	t.Parallel()
	web := echoBackend(t, "web")
	lp := newListenerPool(t)
	port := lp.port(t)
	r := NewRoute("both").Ports(port).Domains("a.test", "b.test").ForwardTo(web.addr()).Route()
	r.Action.TLS = &RouteTLS{Mode: TLSTerminate}
	startTestProxy(t, lp, Options{Routes: []Route{r}, Certificates: testCertStore(t), Security: domainChecker{refuse: "b.test"}})

	client, dials := proxyClient(t, port, insecureTLS("a.test", "http/1.1"), false)
	resp, body := do(t, client, http.MethodGet, "https://a.test/", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	resp, _ = do(t, client, http.MethodGet, "https://a.test/", http.Header{"Host": {"b.test"}}, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "Host b.test on a connection admitted for SNI a.test")
	require.EqualValues(t, 1, dials.Load(), "both requests on the one connection")
}
