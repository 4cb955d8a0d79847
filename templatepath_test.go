package smartproxy

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// {path} means one thing in every template: the escaped request path
// without the query, which is {query}; both redirects append the query
// unless the template places it or has its own. These cases run through
// action.redirect and through HTTPRedirectHandler alike.
var templatePathCases = []struct {
	name, tmpl, target, want string
}{
	{"https upgrade keeps the query", "https://{domain}{path}", "/a/b?c=d", "https://t.test/a/b?c=d"},
	{"no query", "https://{domain}{path}", "/a/b", "https://t.test/a/b"},
	{"escaped path", "https://{domain}{path}", "/a%2Fb/c%20d", "https://t.test/a%2Fb/c%20d"},
	{"query after a suffix", "https://{domain}{path}/end", "/a?c=d", "https://t.test/a/end?c=d"},
	{"query placed", "https://{domain}/new{path}?{query}&v=2", "/a?c=d", "https://t.test/new/a?c=d&v=2"},
	{"own query wins", "https://{domain}{path}?src=x", "/a?c=d", "https://t.test/a?src=x"},
	{"query alone", "https://{domain}/q/{query}", "/a?c=d", "https://t.test/q/c=d"},
}

func TestTemplatePathActionRedirect(t *testing.T) {
	lp := newListenerPool(t)
	port := lp.port(t)
	var routes []Route
	for i, tc := range templatePathCases {
		// One route per case, told apart by a header.
		routes = append(routes, Route{Name: tc.name,
			Match:  RouteMatch{Ports: Ports(port), Domains: StringList{"t.test"}, Headers: map[string]string{"X-Case": strconv.Itoa(i)}},
			Action: RouteAction{Type: ActionForward, Redirect: &Redirect{To: tc.tmpl, Status: http.StatusFound}}})
	}
	startTestProxy(t, lp, Options{Routes: routes})
	c, _ := proxyClient(t, port, nil, false)
	for i, tc := range templatePathCases {
		resp, _ := do(t, c, "GET", "http://t.test"+tc.target, hdr("X-Case", strconv.Itoa(i)), nil)
		require.Equal(t, http.StatusFound, resp.StatusCode, tc.name)
		require.Equal(t, tc.want, resp.Header.Get("Location"), tc.name)
	}
}

func TestTemplatePathRedirectHandler(t *testing.T) {
	for _, tc := range templatePathCases {
		t.Run(tc.name, func(t *testing.T) {
			hh := newHandlerHarness(t, HTTPRedirectHandler(tc.tmpl, http.StatusFound))
			c := hh.connect(t, "203.0.113.7:40000")
			_, err := io.WriteString(c, "GET "+tc.target+" HTTP/1.1\r\nHost: t.test\r\n\r\n")
			require.NoError(t, err)
			resp, _ := readResponse(t, bufio.NewReader(c), http.MethodGet)
			require.Equal(t, http.StatusFound, resp.StatusCode)
			require.Equal(t, tc.want, resp.Header.Get("Location"))
			require.NoError(t, hh.handlerErr(t))
		})
	}
}
