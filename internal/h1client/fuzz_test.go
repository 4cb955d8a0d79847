package h1client

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// FuzzResponseAsReadResponse: a final response head that both the
// strict parser and http.ReadResponse take becomes, through RoundTrip's
// fill, the *http.Response that http.ReadResponse makes of it (status,
// header, lengths, Transfer-Encoding, Close, announced trailer).
func FuzzResponseAsReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\ncontent-type: a\r\nSet-Cookie: a\r\nset-cookie: b\r\nX-E:\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTrailer: a, b\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nConnection: keep-alive, close\r\n\r\n",
		"HTTP/1.0 304 Not Modified\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200\r\nPragma: no-cache\r\nContent-Length: 007\r\n\r\n",
		"HTTP/1.1 404 Not  Found \r\nX-A: \t v \t\r\nx-a: w\r\n\r\n",
		"HTTP/1.0 200 \r\n\r\n",
		"HTTP/1.1 200 OK\r\nTrailer: x\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		var p h1parse.Response
		if err := h1parse.ParseResponse(b, &p, head); err != nil || p.Status < 200 || p.HeadLen != len(b) {
			return
		}
		method := "GET"
		if head {
			method = "HEAD"
		}
		r, err := http.NewRequest(method, "http://b/", nil)
		if err != nil {
			t.Fatal(err)
		}
		want, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), r)
		if err != nil {
			return // net/http refuses it: no behaviour to keep
		}
		// The one difference on purpose: Content-Length is the parsed
		// number ("007" becomes "7"), what the framing says.
		if cl := want.Header["Content-Length"]; len(cl) == 1 {
			if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil {
				cl[0] = strconv.FormatInt(n, 10)
			}
		}
		var rt roundTrip
		rt.fill(&p, r)
		got := &rt.resp
		// And Connection stays when it says close (roundtrip.go): ReadResponse drops it.
		if _, ok := want.Header["Connection"]; !ok {
			if v, ok := got.Header["Connection"]; ok && want.Close {
				want.Header["Connection"] = v
			}
		}
		if got.Status != want.Status || got.StatusCode != want.StatusCode || got.Proto != want.Proto ||
			got.ContentLength != want.ContentLength || got.Close != want.Close ||
			!equalStrings(got.TransferEncoding, want.TransferEncoding) ||
			!equalHeader(got.Header, want.Header) || !equalHeader(got.Trailer, want.Trailer) {
			t.Fatalf("%q:\n got %q %d %q cl=%d close=%v te=%q\n  %q\n  trailer %q\nwant %q %d %q cl=%d close=%v te=%q\n  %q\n  trailer %q", b,
				got.Status, got.StatusCode, got.Proto, got.ContentLength, got.Close, got.TransferEncoding, got.Header, got.Trailer,
				want.Status, want.StatusCode, want.Proto, want.ContentLength, want.Close, want.TransferEncoding, want.Header, want.Trailer)
		}
	})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !equalStrings(v, w) {
			return false
		}
	}
	return true
}
