package smartproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

// strictBackend records every byte it receives and parses it as
// RFC 9112 requests, refusing (and noting) anything ambiguous.
type strictBackend struct {
	*backend
	mu         sync.Mutex
	raw        strings.Builder
	reqs       []strictRequest
	violations []string
}

// strictRequest is what the corpus checks of one parsed request.
type strictRequest struct {
	line    string
	checked []string // X-Checked values
}

func startStrictBackend(t *testing.T) *strictBackend {
	sb := &strictBackend{}
	sb.backend = startBackend(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(io.TeeReader(c, sb))
		for {
			req, err := readStrictRequest(br)
			if errors.Is(err, io.EOF) {
				return
			}
			sb.mu.Lock()
			if errors.Is(err, errFraming) {
				sb.violations = append(sb.violations, err.Error())
			} else if err == nil {
				sb.reqs = append(sb.reqs, req)
			}
			sb.mu.Unlock()
			if err != nil {
				// A framing error, or the stream cut in the middle of a
				// request: the proxy tears a backend connection down when
				// a client's body breaks, so the backend sees an incomplete
				// request, which it never serves.
				_, _ = io.Copy(io.Discard, br) // keep recording
				return
			}
			const body = "served"
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				return
			}
		}
	})
	return sb
}

func (sb *strictBackend) Write(b []byte) (int, error) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.raw.Write(b)
}

func (sb *strictBackend) result() ([]strictRequest, []string, string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.reqs, sb.violations, sb.raw.String()
}

// errFraming marks a forwarded request whose framing is ambiguous.
var errFraming = errors.New("ambiguous framing")

// readStrictRequest parses one request; io.EOF when the stream ended
// cleanly before it.
func readStrictRequest(br *bufio.Reader) (strictRequest, error) {
	var r strictRequest
	line, err := strictLine(br)
	if err != nil {
		if line == "" {
			return r, io.EOF // the stream ended (or was closed) between requests
		}
		return r, fmt.Errorf("request line: %w", err)
	}
	r.line = line
	if parts := strings.Split(line, " "); len(parts) != 3 || parts[2] != "HTTP/1.1" || !isToken(parts[0]) {
		return r, fmt.Errorf("%w: request line %q", errFraming, line)
	}
	var cls, tes []string
	for {
		h, err := strictLine(br)
		if err != nil {
			return r, fmt.Errorf("header: %w", err)
		}
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if !ok || !isToken(name) {
			return r, fmt.Errorf("%w: header line %q (obs-fold or bad name)", errFraming, h)
		}
		value = strings.Trim(value, " \t")
		for i := 0; i < len(value); i++ {
			if b := value[i]; b < 0x20 && b != '\t' || b == 0x7f {
				return r, fmt.Errorf("%w: control byte in %q", errFraming, h)
			}
		}
		switch strings.ToLower(name) {
		case "content-length":
			cls = append(cls, value)
		case "transfer-encoding":
			tes = append(tes, value)
		case "x-checked":
			r.checked = append(r.checked, value)
		}
	}
	switch {
	case len(tes) > 0 && len(cls) > 0:
		return r, fmt.Errorf("%w: both Content-Length %q and Transfer-Encoding %q", errFraming, cls, tes)
	case len(tes) > 1 || len(tes) == 1 && !strings.EqualFold(tes[0], "chunked"):
		return r, fmt.Errorf("%w: transfer-encoding %q", errFraming, tes)
	case len(tes) == 1:
		return r, strictChunked(br)
	case len(cls) > 1:
		return r, fmt.Errorf("%w: content-length %q", errFraming, cls)
	case len(cls) == 1:
		n, err := strconv.ParseUint(cls[0], 10, 62)
		if err != nil || cls[0][0] == '+' {
			return r, fmt.Errorf("%w: content-length %q", errFraming, cls[0])
		}
		_, err = io.CopyN(io.Discard, br, int64(n))
		return r, err
	}
	return r, nil
}

// strictChunked reads a chunked body: hex sizes of up to 15 digits, data,
// CRLF; then trailer fields up to the empty line.
func strictChunked(br *bufio.Reader) error {
	for {
		line, err := strictLine(br)
		if err != nil {
			return fmt.Errorf("chunk size: %w", err)
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseUint(size, 16, 60)
		if err != nil || len(size) > 15 || strings.ContainsAny(size, "+-xX") {
			return fmt.Errorf("%w: chunk size %q", errFraming, line)
		}
		if n == 0 {
			for {
				tr, err := strictLine(br)
				if err != nil || tr == "" {
					return err
				}
			}
		}
		if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
			return err
		}
		if crlf, err := strictLine(br); err != nil {
			return err
		} else if crlf != "" {
			return fmt.Errorf("%w: chunk data not followed by CRLF: %q", errFraming, crlf)
		}
	}
}

// strictLine reads one CRLF-terminated line without its CRLF; a bare LF
// or CR is an error.
func strictLine(br *bufio.Reader) (string, error) {
	s, err := br.ReadString('\n')
	if err != nil {
		return s, err
	}
	s = s[:len(s)-1]
	if !strings.HasSuffix(s, "\r") {
		return s, fmt.Errorf("%w: bare LF after %q", errFraming, s)
	}
	s = s[:len(s)-1]
	if strings.ContainsRune(s, '\r') {
		return s, fmt.Errorf("%w: bare CR in %q", errFraming, s)
	}
	return s, nil
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !h1parse.IsTokenChar(s[i]) {
			return false
		}
	}
	return s != ""
}
