package h1parse

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const host = "Host: a.test\r\n"

// TestParseRefuses: every smuggling vector of the proxy's corpus, and
// the other heads the package documents as refused, are refused with
// the documented error; the well-formed heads next to them pass.
func TestParseRefuses(t *testing.T) {
	t.Parallel()
	refused := []struct{ name, head string }{
		{"bare LF line ends", "GET / HTTP/1.1\nHost: a.test\n\n"},
		{"bare LF in a field", "GET / HTTP/1.1\r\n" + host + "X: a\nContent-Length: 5\r\n\r\n"},
		{"bare CR in a field", "GET / HTTP/1.1\r\n" + host + "X: a\rContent-Length: 5\r\n\r\n"},
		{"NUL in a value", "GET / HTTP/1.1\r\n" + host + "X: a\x00b\r\n\r\n"},
		{"NUL in Host", "GET / HTTP/1.1\r\nHost: a.test\x00.b\r\n\r\n"},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X: a\r\n b\r\n\r\n"},
		{"obs-fold first", "GET / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n" + host + "\r\n"},
		{"space before colon", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding : chunked\r\n\r\n"},
		{"TE xchunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n"},
		{"TE chunked, identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, identity\r\n\r\n"},
		{"TE identity, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity, chunked\r\n\r\n"},
		{"TE twice", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"TE quoted", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \"chunked\"\r\n\r\n"},
		{"TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"CL differing", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"},
		{"CL list differing", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 6\r\n\r\n"},
		{"CL plus", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\n"},
		{"CL minus", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n"},
		{"CL hex", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x5\r\n\r\n"},
		{"CL empty", "POST / HTTP/1.1\r\n" + host + "Content-Length:\r\n\r\n"},
		{"CL overflow", "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999\r\n\r\n"},
		{"no Host", "GET / HTTP/1.1\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\n" + host + "Host: b.test\r\n\r\n"},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a.test b\r\n\r\n"},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n"},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"HTTP/1.2", "GET / HTTP/1.2\r\n" + host + "\r\n"},
		{"lower-case version", "GET / http/1.1\r\n" + host + "\r\n"},
		{"two spaces", "GET  / HTTP/1.1\r\n" + host + "\r\n"},
		{"tab separator", "GET\t/ HTTP/1.1\r\n" + host + "\r\n"},
		{"method not a token", "G(T / HTTP/1.1\r\n" + host + "\r\n"},
		{"target with DEL", "GET /\x7f HTTP/1.1\r\n" + host + "\r\n"},
		{"target with high byte", "GET /\xff HTTP/1.1\r\n" + host + "\r\n"},
		{"relative target", "GET a/b HTTP/1.1\r\n" + host + "\r\n"},
		{"asterisk on GET", "GET * HTTP/1.1\r\n" + host + "\r\n"},
		{"absolute-form ftp", "GET ftp://a.test/ HTTP/1.1\r\n" + host + "\r\n"},
		{"empty field name", "GET / HTTP/1.1\r\n" + host + ": x\r\n\r\n"},
		{"field name with space", "GET / HTTP/1.1\r\n" + host + "X Y: x\r\n\r\n"},
		{"line without colon", "GET / HTTP/1.1\r\n" + host + "junk\r\n\r\n"},
		{"too many fields", "GET / HTTP/1.1\r\n" + host + strings.Repeat("X: y\r\n", MaxFields) + "\r\n"},
	}
	var r Request
	for _, tc := range refused {
		err := Parse([]byte(tc.head), &r)
		require.Error(t, err, tc.name)
		require.True(t, errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupported), "%s: %v", tc.name, err)
	}

	accepted := []struct {
		name, head string
		cl         int64
		chunked    bool
		close      bool
	}{
		{"GET", "GET / HTTP/1.1\r\n" + host + "\r\n", -1, false, false},
		{"POST", "POST /x?y HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\n", 5, false, false},
		{"CL equal twice", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 5, false, false},
		{"CL list equal", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5 , 5\r\n\r\n", 5, false, false},
		{"chunked any case", "POST / HTTP/1.1\r\n" + host + "transfer-encoding: Chunked\r\n\r\n", -1, true, false},
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", -1, true, true},
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", -1, true, true},
		{"close", "GET / HTTP/1.1\r\n" + host + "Connection: keep-alive, close\r\n\r\n", -1, false, true},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", -1, false, true},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", -1, false, false},
		{"absolute-form", "GET http://b.test/x HTTP/1.1\r\n" + host + "\r\n", -1, false, false},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", -1, false, false},
		{"CONNECT", "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", -1, false, false},
		{"IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", -1, false, false},
		{"OWS and tab in value", "GET / HTTP/1.1\r\n" + host + "X: \ta b\t \r\n\r\n", -1, false, false},
	}
	for _, tc := range accepted {
		buf := []byte(tc.head + "next")
		require.NoError(t, Parse(buf, &r), tc.name)
		require.Equal(t, len(tc.head), r.HeadLen, tc.name)
		require.Equal(t, tc.cl, r.ContentLength, tc.name)
		require.Equal(t, tc.chunked, r.Chunked, tc.name)
		require.Equal(t, tc.close, r.Close, tc.name)
	}
	require.NoError(t, Parse([]byte("GET / HTTP/1.1\r\n"+host+"X: \ta b\t \r\n\r\n"), &r))
	require.Equal(t, "a b", string(r.Field("x")))
	require.Equal(t, "a.test", string(r.Host))
}

// TestParseIncomplete: a head cut anywhere before its end asks for more.
func TestParseIncomplete(t *testing.T) {
	t.Parallel()
	head := "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\n"
	var r Request
	for i := range len(head) {
		require.ErrorIs(t, Parse([]byte(head[:i]), &r), ErrIncomplete, "cut at %d", i)
	}
}

// TestChunkReader: strict chunked bodies.
func TestChunkReader(t *testing.T) {
	t.Parallel()
	read := func(body string) (string, error) {
		b, err := io.ReadAll(NewChunkReader(bufio.NewReader(strings.NewReader(body))))
		return string(b), err
	}
	good := map[string]string{
		"5\r\nhello\r\n0\r\n\r\n":                     "hello",
		"5;a=b\r\nhello\r\n0\r\n\r\n":                 "hello",
		"2\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: v\r\n\r\nG": "hello",
		"A\r\n0123456789\r\n0\r\n\r\n":                "0123456789",
	}
	for body, want := range good {
		got, err := read(body)
		require.NoError(t, err, "%q", body)
		require.Equal(t, want, got)
	}
	bad := []string{
		"10000000000000005\r\nhello\r\n0\r\n\r\n", // overflow
		"ffffffffffffffff\r\nhello\r\n0\r\n\r\n",  // 16 digits
		"5\nhello\r\n0\r\n\r\n",                   // bare LF
		"5;a\nb\r\nhello\r\n0\r\n\r\n",            // bare LF in an extension
		"3\r\nhello\r\n0\r\n\r\n",                 // data longer than its size
		"-5\r\nhello\r\n0\r\n\r\n",                // sign
		"0x5\r\nhello\r\n0\r\n\r\n",               // prefix
		" 5\r\nhello\r\n0\r\n\r\n",                // leading space
		"\r\nhello\r\n0\r\n\r\n",                  // no size
		"5\r\nhello\r\n0\r\nX : v\r\n\r\n",        // bad trailer
		"5\r\nhello\r\n0\r\n X: v\r\n\r\n",        // folded trailer
		"5;\x00\r\nhello\r\n0\r\n\r\n",            // NUL in an extension
	}
	for _, body := range bad {
		_, err := read(body)
		require.ErrorIs(t, err, ErrMalformed, "%q", body)
	}
	_, err := read("5\r\nhel")
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

// BenchmarkParse: callgrind-http.sh's GET (loadgen) and a typical
// browser-sized head, parsed into a reused Request (0 allocations), by
// Parse and, for comparison, by the parser it replaced (refParse).
func BenchmarkParse(b *testing.B) {
	browser := "GET /assets/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Connection: keep-alive\r\nReferer: https://www.example.com/\r\nCookie: a=b; c=d\r\n\r\n"
	for _, head := range []struct{ name, head string }{{"loadgen", benchGET}, {"browser", browser}} {
		for _, p := range []struct {
			name  string
			parse func([]byte, *Request) error
		}{{"", Parse}, {"-reference", refParse}} {
			b.Run(head.name+p.name, func(b *testing.B) {
				buf := []byte(head.head)
				var r Request
				b.ReportAllocs()
				b.SetBytes(int64(len(buf)))
				for b.Loop() {
					if err := p.parse(buf, &r); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestIncompleteHeadsAllocateNothing: a reader asks for a head after every read, so an
// incomplete one (empty, cut in the start line, in a field line or in its CRLF) is parsed on
// every request; its ErrIncomplete must cost no allocation (it cost an fmt.Errorf).
func TestIncompleteHeadsAllocateNothing(t *testing.T) {
	var req Request
	var resp Response
	for _, s := range []string{"", "G", "GET / HTTP/1.", "GET / HTTP/1.1\r\nHost: a", "GET / HTTP/1.1\r\nHost: a\r\n\r"} {
		b := []byte(s)
		require.ErrorIs(t, Parse(b, &req), ErrIncomplete, "%q", s)
		require.Zero(t, testing.AllocsPerRun(50, func() { _ = Parse(b, &req) }), "request %q", s)
	}
	for _, s := range []string{"", "H", "HTTP/1.1 200 O", "HTTP/1.1 200 OK\r\nDate: x", "HTTP/1.1 200 OK\r\n\r"} {
		b := []byte(s)
		require.ErrorIs(t, ParseResponse(b, &resp, false), ErrIncomplete, "%q", s)
		require.Zero(t, testing.AllocsPerRun(50, func() { _ = ParseResponse(b, &resp, false) }), "response %q", s)
	}
}
