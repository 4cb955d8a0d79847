package smartproxy

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Tests of the Connection field that http.ReadResponse deletes when it
// says close, recoverable from the recorded bytes (finalConnection).

func TestFinalConnection(t *testing.T) {
	for _, c := range []struct {
		name, raw string
		vals      []string
		ok        bool
	}{
		{"none", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", nil, true},
		{"close and a name", "HTTP/1.1 200 OK\r\nConnection: close, X-A\r\n\r\nbody", []string{"close, X-A"}, true},
		{"two lines, any case", "HTTP/1.1 200 OK\r\nconnection: X-A\r\nCONNECTION:close\r\n\r\n", []string{"X-A", "close"}, true},
		{"obs-fold joined", "HTTP/1.1 200 OK\r\nConnection: close,\r\n X-A\r\nX-B: b\r\n\r\n", []string{"close, X-A"}, true},
		{"bare LF", "HTTP/1.1 200 OK\nConnection: close, X-A\n\n", []string{"close, X-A"}, true},
		{"1xx skipped", "HTTP/1.1 103 Early Hints\r\nConnection: X-H\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
			[]string{"close"}, true},
		{"1xx with two spaces skipped, as ReadResponse reads it", "HTTP/1.1  103 Early Hints\r\nLink: <x>\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close, X-Drop\r\n\r\n",
			[]string{"close, X-Drop"}, true},
		{"101 is final", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", []string{"Upgrade"}, true},
		{"a name in the body is not a field", "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n\r\nConnection: X-A\r\n\r\n", nil, true},
		{"field name that only starts so", "HTTP/1.1 200 OK\r\nConnection-X: a\r\n\r\n", nil, true},
		{"incomplete", "HTTP/1.1 200 OK\r\nConnection: close\r\n", nil, false},
		{"only a 1xx", "HTTP/1.1 100 Continue\r\n\r\n", nil, false},
		{"empty", "", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			vals, ok := finalConnection([]byte(c.raw))
			require.Equal(t, c.ok, ok)
			require.Equal(t, c.vals, vals)
		})
	}
}

// FuzzFinalConnection: on any bytes, finalConnection agrees with
// http.ReadResponse: where ReadResponse parses a final head and keeps its
// Connection field, the values are the same; where it deleted the field
// (it said close), the values hold a close.
func FuzzFinalConnection(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-A\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nConnection: X-H\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 200 OK\nConnection: close,\n X-A\n\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive, X-A\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, ok := finalConnection(b)
		if !ok {
			return
		}
		br := bufio.NewReader(strings.NewReader(string(b)))
		var resp *http.Response
		for {
			r, err := http.ReadResponse(br, nil)
			if err != nil {
				return
			}
			if r.StatusCode < 100 || r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols {
				resp = r
				break
			}
		}
		if got, kept := resp.Header["Connection"]; kept {
			require.Equal(t, got, vals)
			return
		}
		if resp.Close && resp.ProtoAtLeast(1, 1) && !strings.Contains(strings.ToLower(strings.Join(vals, ",")), "close") {
			// ReadResponse also closes for a body without a length.
			require.Empty(t, vals)
		}
	})
}

// TestRestoreConnectionRefusesAMismatch: values recovered without close,
// for a response ReadResponse marked close with a length, are another
// head's: refused rather than guessed.
func TestRestoreConnectionRefusesAMismatch(t *testing.T) {
	resp := &http.Response{ProtoMajor: 1, ProtoMinor: 1, Close: true, ContentLength: 2, Header: http.Header{}}
	require.ErrorIs(t, restoreConnection(resp, []string{"X-A"}, true), errHeadUnseen)
	require.ErrorIs(t, restoreConnection(resp, nil, true), errHeadUnseen)
	require.NoError(t, restoreConnection(resp, []string{"close, X-A"}, true))
	require.Equal(t, []string{"close, X-A"}, resp.Header["Connection"])
	untilClose := &http.Response{ProtoMajor: 1, ProtoMinor: 1, Close: true, ContentLength: -1, Header: http.Header{}}
	require.NoError(t, restoreConnection(untilClose, nil, true))
}
