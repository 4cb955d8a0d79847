package smartproxy

import (
	"testing"
)

func init() {
	for k, v := range map[string]equivScript{
		"304-ct-cl":  {raw: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Type: text/html\r\nContent-Length: 1234\r\n\r\n"},
		"304-cl":     {raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"},
		"304-cl0":    {raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n"},
		"204-cl0":    {raw: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"},
		"close-drop": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Drop\r\nX-Drop: secret\r\n\r\nok", close: true},
		"drop-upper": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-DROP\r\nConnection: close\r\nx-drop: secret\r\n\r\nok", close: true},
		"hop-fields": {raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nVia: 1.1 be\r\nServer: be\r\n\r\nok"},
		"1xx-fields": {raw: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nConnection: X-H\r\nX-H: h\r\nKeep-Alive: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		"http10":     {raw: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Ka\r\nX-Ka: k\r\n\r\nok", close: true},
	} {
		equivScripts[k] = v
	}
}

func TestFastEquivHeadsExplore(t *testing.T) {
	t.Parallel()
	stacks := startEquivStacks(t, plainRoutes)
	for _, script := range []string{"304-ct-cl", "304-cl", "304-cl0", "204-cl0", "close-drop", "drop-upper", "hop-fields", "1xx-fields", "http10"} {
		for _, s := range stacks {
			o := s.sequence(t, []string{scripted("GET", script), rawReq("GET", "/after", "a.test", "")}, []string{"GET", "GET"})
			t.Logf("%s %s:\n%s", script, s.name, o.text(s))
		}
	}
	for name, send := range map[string]string{
		"two UA":           rawReq("GET", "/ua", "a.test", "", "User-Agent: one", "User-Agent: two"),
		"conn X-Foo":       rawReq("GET", "/c", "a.test", "", "Connection: X-Foo", "X-Foo: f"),
		"conn close X-Foo": rawReq("GET", "/c", "a.test", "", "Connection: close, X-Foo", "X-Foo: f"),
		"hop req":          rawReq("GET", "/c", "a.test", "", "Via: 1.0 c", "Date: Mon, 01 Jan 2024 00:00:00 GMT", "Server: c", "Trailer: X-T", "Upgrade: foo", "Proxy-Authenticate: x", "Proxy-Authorization: y", "Keep-Alive: 1"),
	} {
		for _, s := range stacks {
			o := s.exchange(t, send, "GET")
			t.Logf("%s %s:\n%s", name, s.name, o.text(s))
		}
	}
}

func TestFastEquivHeadsExplore2(t *testing.T) {
	t.Parallel()
	stacks := startEquivStacks(t, plainRoutes)
	for _, s := range stacks {
		o := s.exchange(t, rawReq("POST", "/p", "a.test", "hello", "Content-Length: 5", "X-Script: close-drop"), "POST")
		t.Logf("POST close-drop %s:\n%s", s.name, o.text(s))
		o = s.exchange(t, rawReq("POST", "/p", "a.test", "hello", "Content-Length: 5", "X-Script: 1xx-fields"), "POST")
		t.Logf("POST 1xx %s:\n%s", s.name, o.text(s))
		o = s.exchange(t, rawReq("POST", "/p", "a.test", "hello", "Content-Length: 5", "X-Script: 304-ct-cl", "User-Agent: a", "User-Agent: b"), "POST")
		t.Logf("POST 304 %s:\n%s", s.name, o.text(s))
	}
}
