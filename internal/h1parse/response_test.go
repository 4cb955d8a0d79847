package h1parse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestParseResponseRefuses: the response heads a proxy must not relay
// (their framing could be read two ways, or they break the syntax) are
// refused with the documented error.
func TestParseResponseRefuses(t *testing.T) {
	t.Parallel()
	refused := []struct{ name, head string }{
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"},
		{"bare LF in a field", "HTTP/1.1 200 OK\r\nX: a\nContent-Length: 5\r\n\r\n"},
		{"bare CR in a field", "HTTP/1.1 200 OK\r\nX: a\rContent-Length: 5\r\n\r\n"},
		{"NUL in a value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"},
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE and CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"},
		{"CL differing", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
		{"CL signed", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"},
		{"CL negative", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"},
		{"CL overflow", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"},
		{"TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"},
		{"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
		{"TE chunked, identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n"},
		{"TE twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE on HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n"},
		{"lower-case version", "http/1.1 200 OK\r\n\r\n"},
		{"two-digit code", "HTTP/1.1 20 OK\r\n\r\n"},
		{"code under 100", "HTTP/1.1 099 OK\r\n\r\n"},
		{"letters in code", "HTTP/1.1 2x0 OK\r\n\r\n"},
		{"four-digit code", "HTTP/1.1 2000 OK\r\n\r\n"},
		{"tab separator", "HTTP/1.1\t200 OK\r\n\r\n"},
		{"control byte in reason", "HTTP/1.1 200 O\x01K\r\n\r\n"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n"},
		{"line without colon", "HTTP/1.1 200 OK\r\njunk\r\n\r\n"},
		{"too many fields", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", MaxFields+1) + "\r\n"},
	}
	for _, tc := range refused {
		var r Response
		err := ParseResponse([]byte(tc.head), &r, false)
		require.Error(t, err, tc.name)
		require.False(t, errors.Is(err, ErrIncomplete), "%s: %v", tc.name, err)
		require.True(t, errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupported), "%s: %v", tc.name, err)
	}
}

// TestParseResponseFraming: the body framing of each kind of response,
// HEAD and the bodyless statuses included.
func TestParseResponseFraming(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, head string
		isHead     bool
		framing    Framing
		cl         int64
		close      bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, Length, 5, false},
		{"length 0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, Length, 0, false},
		{"equal duplicates", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n", false, Length, 5, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", false, Chunked, -1, false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\n", false, UntilClose, -1, true},
		{"HEAD keeps CL", "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", true, NoBody, 500, false},
		{"HEAD chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, NoBody, -1, false},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, NoBody, -1, false},
		{"304 with CL", "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", false, NoBody, 7, false},
		{"103", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, NoBody, -1, false},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", false, Length, 1, false},
		{"empty reason", "HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n", false, Length, 1, false},
		{"close", "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n", false, Length, 1, true},
		{"1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, Length, 1, true},
		{"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n", false, Length, 1, false},
	}
	var r Response
	for _, tc := range cases {
		require.NoError(t, ParseResponse([]byte(tc.head+"rest"), &r, tc.isHead), tc.name)
		require.Equal(t, tc.framing, r.Framing, tc.name)
		require.Equal(t, tc.cl, r.ContentLength, tc.name)
		require.Equal(t, tc.close, r.Close, tc.name)
		require.Equal(t, len(tc.head), r.HeadLen, tc.name)
	}
	require.NoError(t, ParseResponse([]byte("HTTP/1.1 404 Not Found\r\nA: 1\r\nB:\t2 \r\n\r\n"), &r, false))
	require.Equal(t, 404, r.Status)
	require.Equal(t, "Not Found", string(r.Reason))
	require.Len(t, r.Fields, 2)
	require.Equal(t, "2", string(r.Field("b")))
	require.Nil(t, r.Field("c"))
	require.ErrorIs(t, ParseResponse([]byte("HTTP/1.1 200 OK\r\nX: y\r\n"), &r, false), ErrIncomplete)
}

// TestParseResponseAllocs: parsing into a reused Response allocates
// nothing.
func TestParseResponseAllocs(t *testing.T) {
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\nDate: Thu, 03 Dec 2026 00:00:00 GMT\r\n\r\n")
	var r Response
	require.NoError(t, ParseResponse(head, &r, false))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = ParseResponse(head, &r, false) }))
}

// FuzzParseResponse: ParseResponse never panics, decides one framing
// (a chunked response has no length, a length-delimited one a
// non-negative length, a close-delimited one Close), and where
// net/http's ReadResponse, an independent parser, also accepts the head,
// both agree on the status and on where a length-delimited or chunked
// body ends: a response the proxy relays ends where the backend meant.
//
//	go test -fuzz FuzzParseResponse -fuzztime 60s ./internal/h1parse
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
		"HTTP/1.1 200\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		var r Response
		if err := ParseResponse(data, &r, head); err != nil {
			return
		}
		switch r.Framing {
		case Chunked:
			if r.ContentLength >= 0 {
				t.Fatalf("chunked with a length: %q", data)
			}
		case Length:
			if r.ContentLength < 0 {
				t.Fatalf("length framing without a length: %q", data)
			}
		case UntilClose:
			if !r.Close || r.ContentLength >= 0 {
				t.Fatalf("close-delimited but not Close: %q", data)
			}
		case NoBody:
			if !head && r.Status >= 200 && r.Status != 204 && r.Status != 304 {
				t.Fatalf("status %d without a body: %q", r.Status, data)
			}
		}
		for _, fl := range r.Fields {
			if bytes.ContainsAny(fl.Value, "\r\n\x00") || !isToken(fl.Name) {
				t.Fatalf("field %q: %q accepted", fl.Name, fl.Value)
			}
		}
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		br := bufio.NewReader(bytes.NewReader(data))
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return // net/http refuses more in some places (reason bytes)
		}
		if resp.StatusCode != r.Status {
			t.Fatalf("status differs: net/http %d, ours %d", resp.StatusCode, r.Status)
		}
		if r.Framing != Length && r.Framing != Chunked {
			return
		}
		ours, ok := endOfResponse(data, &r)
		_, err = io.Copy(io.Discard, resp.Body)
		if ok && err == nil && ours != len(data)-br.Buffered() {
			t.Fatalf("response ends at %d for us, %d for net/http: %q", ours, len(data)-br.Buffered(), data)
		}
	})
}

// endOfResponse is where a length-delimited or chunked response ends in
// data; false when data ends first or the chunked body is refused.
func endOfResponse(data []byte, r *Response) (int, bool) {
	rest := data[r.HeadLen:]
	if r.Framing == Chunked {
		br := bufio.NewReader(bytes.NewReader(rest))
		if _, err := io.Copy(io.Discard, NewChunkReader(br)); err != nil {
			return 0, false
		}
		return len(data) - br.Buffered(), true
	}
	if r.ContentLength > int64(len(rest)) {
		return 0, false
	}
	return r.HeadLen + int(r.ContentLength), true
}

// BenchmarkParseResponse: callgrind-http.sh's response (net/http's head,
// its 1 KiB body behind it in the buffer), parsed into a reused Response
// by ParseResponse and by the parser it replaced (refParseResponse).
func BenchmarkParseResponse(b *testing.B) {
	for _, p := range []struct {
		name  string
		parse func([]byte, *Response, bool) error
	}{{"net-http", ParseResponse}, {"net-http-reference", refParseResponse}} {
		b.Run(p.name, func(b *testing.B) {
			buf := []byte(benchResponse)
			var r Response
			b.ReportAllocs()
			for b.Loop() {
				if err := p.parse(buf, &r, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
