package h1parse

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzParse checks the corpus property on the head parser: a stream the
// parser accepts is one request whose end another parser finds at the
// same byte. For every input Parse accepts, the parsed head is
// self-consistent (one framing, fields free of control bytes), and
// net/http's ReadRequest, an independent parser, reads the same method,
// target and framing and ends the request (head and body) at the same
// offset: a backend reading what the proxy forwarded cannot see a second
// request where the proxy saw one.
//
//	go test -fuzz FuzzParse -fuzztime 60s ./internal/h1parse
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Request
		if err := Parse(data, &r); err != nil {
			return
		}
		if r.Chunked && r.ContentLength >= 0 {
			t.Fatalf("two framings: %q", data)
		}
		if r.Minor == 1 && r.Host == nil {
			t.Fatalf("HTTP/1.1 without Host accepted: %q", data)
		}
		for _, fl := range r.Fields {
			if bytes.ContainsAny(fl.Value, "\r\n\x00") || !isToken(fl.Name) {
				t.Fatalf("field %q: %q accepted", fl.Name, fl.Value)
			}
		}
		ours, okOurs := endOfRequest(data, &r)

		br := bufio.NewReader(bytes.NewReader(data))
		req, err := http.ReadRequest(br)
		if err != nil {
			// net/http refuses some heads this parser takes (it checks
			// more of a target's syntax); no desync is possible there.
			return
		}
		if req.Method != string(r.Method) || req.RequestURI != string(r.Target) {
			t.Fatalf("request line differs: net/http %s %s, ours %s %s", req.Method, req.RequestURI, r.Method, r.Target)
		}
		goChunked := len(req.TransferEncoding) > 0
		if goChunked != r.Chunked || !goChunked && max(req.ContentLength, 0) != max(r.ContentLength, 0) {
			t.Fatalf("framing differs on %q: net/http TE %q CL %d, ours chunked %v CL %d",
				data, req.TransferEncoding, req.ContentLength, r.Chunked, r.ContentLength)
		}
		_, err = io.Copy(io.Discard, req.Body)
		theirs := len(data) - br.Buffered()
		if okOurs && err == nil && ours != theirs {
			t.Fatalf("request ends at %d for us, %d for net/http: %q", ours, theirs, data)
		}
	})
}

// endOfRequest is where the request whose head r is ends in data: after
// its Content-Length or its chunked body; false when data ends first or
// the chunked body is refused.
func endOfRequest(data []byte, r *Request) (int, bool) {
	rest := data[r.HeadLen:]
	switch {
	case r.Chunked:
		br := bufio.NewReader(bytes.NewReader(rest))
		if _, err := io.Copy(io.Discard, NewChunkReader(br)); err != nil {
			return 0, false
		}
		return len(data) - br.Buffered(), true
	case r.ContentLength > int64(len(rest)):
		return 0, false
	case r.ContentLength > 0:
		return r.HeadLen + int(r.ContentLength), true
	}
	return r.HeadLen, true
}

// fuzzSeeds are the smuggling corpus's vectors and well-formed requests
// (the inputs two 60 s fuzz runs found interesting are committed under
// testdata/fuzz/FuzzParse, and run with every go test).
var fuzzSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /s HTTP/1.1\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
	"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\"q\"\r\nhello\r\n0\r\nT: v\r\n\r\n",
	"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
	"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\nHost: a.test\n\n",
	strings.Repeat("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", 2),
}
