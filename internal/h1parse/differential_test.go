package h1parse

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The differential tests hold Parse and ParseResponse, the one-pass
// parser, to the decisions and the parsed values of the parser they
// replaced (reference_test.go's refParse and refParseResponse): for
// every input the same error class, and on success every field equal,
// slices equal in content, in being nil and in their offset into the
// input.
//
//	go test -fuzz FuzzParseMatchesReference -fuzztime 3m ./internal/h1parse
//	go test -fuzz FuzzParseResponseMatchesReference -fuzztime 3m ./internal/h1parse

// benchGET and benchResponse are the heads bench/callgrind-http.sh's
// proxied GET carries: loadgen's request, and Go net/http's response
// (bench/cmd/backend) with its 1 KiB body behind it.
var (
	benchGET      = "GET /1k HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: loadgen\r\n\r\n"
	benchResponse = "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nContent-Type: application/octet-stream\r\n" +
		"Date: Thu, 03 Dec 2026 17:00:00 GMT\r\n\r\n" + strings.Repeat("x", 1024)
)

// diffSeeds are the inputs the differential tests start from: the fuzz
// seeds of both directions, the committed FuzzParse corpus, the bench
// heads and heads at the edges of the one-pass parser's rules.
func diffSeeds(tb testing.TB) []string {
	seeds := append([]string{benchGET, benchResponse,
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
		"HTTP/1.1 200\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 \r\nConnection: keep-alive, close\r\nX:\t \r\n\r\n",
		"HTTP/1.0 404 Not \xffFound\t\r\nConnection: Keep-Alive, upgrade\r\nContent-Length: 0\r\n\r\n",
		"\r\n\r\n", "\n", "\r\n", "GET / HTTP/1.1\r\n",
		"POST http://a.test/x HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 0007\r\n\r\n",
		"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nConnection: Upgrade\r\n\r\n",
		"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nHost: a\r\n\r\n",
		"PUT / HTTP/1.1\r\nhost: [::1]:8\r\nTRANSFER-ENCODING: chunked\r\nCONTENT-LENGTH: 3\r\n\r\n",
	}, fuzzSeeds...)
	files, err := filepath.Glob("testdata/fuzz/FuzzParse/*")
	if err != nil {
		tb.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		// go test fuzz v1, then one line: []byte("...").
		_, v, ok := strings.Cut(strings.TrimSpace(string(b)), "[]byte(")
		if !ok {
			tb.Fatalf("%s: no []byte value", name)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(v, ")"))
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		seeds = append(seeds, s)
	}
	return seeds
}

// errClass names err's class: the one part of an error the parsers must
// agree on.
func errClass(err error) string {
	switch {
	case err == nil:
		return "nil"
	case errors.Is(err, ErrIncomplete):
		return "incomplete"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrUnsupported):
		return "unsupported"
	}
	return "other: " + err.Error()
}

// sameSlice reports whether a and b, slices of data, are both nil or
// hold the same bytes at the same offset.
func sameSlice(data, a, b []byte) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return bytes.Equal(a, b) && cap(data)-cap(a) == cap(data)-cap(b)
}

// sameFields reports two field lists equal as sameSlice sees them.
func sameFields(data []byte, a, b []Field) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameSlice(data, a[i].Name, b[i].Name) || !sameSlice(data, a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// checkRequest fails t when Parse and refParse differ on data. Each
// parses into a Request that held another head before (the bench GET),
// so that what reset leaves is compared too.
func checkRequest(t *testing.T, data []byte) {
	t.Helper()
	prev := []byte(benchGET)
	var got, want Request
	if Parse(prev, &got) != nil || refParse(prev, &want) != nil {
		t.Fatal("bench GET refused")
	}
	gotErr, wantErr := Parse(data, &got), refParse(data, &want)
	if errClass(gotErr) != errClass(wantErr) {
		t.Fatalf("%q: Parse %v, reference %v", data, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if !sameSlice(data, got.Method, want.Method) || !sameSlice(data, got.Target, want.Target) ||
		!sameSlice(data, got.Host, want.Host) || !sameFields(data, got.Fields, want.Fields) ||
		got.Minor != want.Minor || got.ContentLength != want.ContentLength ||
		got.Chunked != want.Chunked || got.Close != want.Close || got.Upgrade != want.Upgrade ||
		got.Expect != want.Expect || got.HeadLen != want.HeadLen {
		t.Fatalf("%q: Parse %+v, reference %+v", data, got, want)
	}
}

// checkResponse fails t when ParseResponse and refParseResponse differ
// on data, as checkRequest does for requests.
func checkResponse(t *testing.T, data []byte, head bool) {
	t.Helper()
	prev := []byte(benchResponse)
	var got, want Response
	if ParseResponse(prev, &got, false) != nil || refParseResponse(prev, &want, false) != nil {
		t.Fatal("bench response refused")
	}
	gotErr, wantErr := ParseResponse(data, &got, head), refParseResponse(data, &want, head)
	if errClass(gotErr) != errClass(wantErr) {
		t.Fatalf("%q (head %v): ParseResponse %v, reference %v", data, head, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if !sameSlice(data, got.Reason, want.Reason) || !sameFields(data, got.Fields, want.Fields) ||
		got.Minor != want.Minor || got.Status != want.Status || got.ContentLength != want.ContentLength ||
		got.Framing != want.Framing || got.Close != want.Close || got.HeadLen != want.HeadLen {
		t.Fatalf("%q (head %v): ParseResponse %+v, reference %+v", data, head, got, want)
	}
}

// FuzzParseMatchesReference: Parse decides every input as refParse did.
func FuzzParseMatchesReference(f *testing.F) {
	for _, s := range diffSeeds(f) {
		f.Add([]byte(s))
		if _, fields, ok := strings.Cut(s, "\r\n"); ok {
			f.Add([]byte(fields)) // for the prefixed check below
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkRequest(t, data)
		// The same bytes as the field lines of an accepted request line,
		// so that the fuzzer reaches accepted heads more often.
		checkRequest(t, append([]byte("GET / HTTP/1.1\r\n"), data...))
	})
}

// FuzzParseResponseMatchesReference: ParseResponse decides every input
// as refParseResponse did.
func FuzzParseResponseMatchesReference(f *testing.F) {
	for _, s := range diffSeeds(f) {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
		if _, fields, ok := strings.Cut(s, "\r\n"); ok {
			f.Add([]byte(fields), false) // for the prefixed check below
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		checkResponse(t, data, head)
		checkResponse(t, append([]byte("HTTP/1.1 200 OK\r\n"), data...), head)
	})
}

// TestParsersMatchReference runs the differential check, without the
// fuzzer, on every seed cut at every length (the incomplete heads), and
// on every seed with each byte in turn replaced by each of the bytes the
// rules treat specially.
func TestParsersMatchReference(t *testing.T) {
	t.Parallel()
	special := []byte("\r\n\x00\t :,;\x7f\x80\xff/1aZ\"")
	for _, s := range diffSeeds(t) {
		for n := range len(s) + 1 {
			data := []byte(s[:n])
			checkRequest(t, data)
			checkResponse(t, data, n%2 == 0)
		}
		for i := range min(len(s), 200) {
			for _, c := range special {
				data := []byte(s)
				data[i] = c
				checkRequest(t, data)
				checkResponse(t, data, false)
			}
		}
	}
}

// TestWordClasses: notNameCommon and valueCtl mark exactly the bytes
// outside their class, every byte value at every position, among
// neighbours of every kind (those that would carry or borrow into it
// included).
func TestWordClasses(t *testing.T) {
	t.Parallel()
	common := func(c byte) bool {
		return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-'
	}
	ctl := func(c byte) bool { return c < 0x20 || c == 0x7f }
	for _, fill := range []byte{0, '\t', ' ', '-', '0', '9', 'A', 'a', 'z', '~', 0x7f, 0x80, 0xff} {
		for pos := range 8 {
			for c := range 256 {
				var w [8]byte
				for i := range w {
					w[i] = fill
				}
				w[pos] = byte(c)
				var wantName, wantCtl uint64
				for i, b := range w {
					if !common(b) {
						wantName |= 0x80 << (8 * i)
					}
					if ctl(b) {
						wantCtl |= 0x80 << (8 * i)
					}
				}
				x := binary.LittleEndian.Uint64(w[:])
				if got := notNameCommon(x); got != wantName {
					t.Fatalf("notNameCommon(%q) = %#x, want %#x", w, got, wantName)
				}
				if got := valueCtl(x); got != wantCtl {
					t.Fatalf("valueCtl(%q) = %#x, want %#x", w, got, wantCtl)
				}
			}
		}
	}
}

// TestIsContentLength: the word compare takes "content-length" in any
// case and nothing else of its length, whichever byte differs.
func TestIsContentLength(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"content-length", "Content-Length", "CONTENT-LENGTH", "cOnTeNt-LeNgTh"} {
		if !isContentLength([]byte(name)) {
			t.Fatalf("%q refused", name)
		}
	}
	for i := range len("content-length") {
		for _, c := range []byte("!#-0_azAZ~") {
			b := []byte("content-length")
			if b[i]|0x20 == c|0x20 {
				continue
			}
			b[i] = c
			if isContentLength(b) != tokenIs(b, "content-length") {
				t.Fatalf("%q: isContentLength differs from tokenIs", b)
			}
		}
	}
	if isContentLength([]byte("content-lengths")) || isContentLength([]byte("content-lengt")) {
		t.Fatal("other lengths taken")
	}
}
