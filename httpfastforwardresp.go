package smartproxy

import (
	"io"
	"net/http"
	"strings"

	"github.com/gosmartproxy/smartproxy/internal/h1client"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"golang.org/x/net/http/httpguts"
)

// The response side of the fast forward (httpfastforward.go): the
// backend's head relayed field by field, the body copied through the
// fastWriter, which frames it as it frames every response.

// relayResponse relays ex to the client through w (fw, or the request
// log's wrapper around it), then releases ex. raw is a pooled buffer it
// owns, for the relayed field lines (the writer returns it). The head goes out with the
// first body bytes when they fit; a body of unknown length is flushed
// whenever the backend has nothing more buffered (a stream, SSE), as
// ReverseProxy flushes such responses. A body that breaks off (or a
// client that goes away) aborts the request after what came was
// flushed: the client sees the connection close, never a complete
// response.
func (h *httpLayer) relayResponse(w http.ResponseWriter, fw *fastWriter, lr *loggedResponse, pr *proxyReq, ex *h1client.Exchange, rawBuf *[fastOutSize]byte) {
	defer ex.Close()
	resp := &ex.Resp
	tmpl := h.expandTemplates(pr, false)
	raw, hasDate := appendRelayedFields(rawBuf[:0], resp.Fields, tmpl)
	if resp.Framing == h1parse.Chunked {
		if names := relayedTrailers(resp.Field("trailer")); names != "" {
			fw.hdr["Trailer"] = []string{names}
		}
		ex.Trailer = func(name, value []byte) {
			// Names no trailer may carry are left out when written (appendTrailers).
			k := http.TrailerPrefix + http.CanonicalHeaderKey(string(name))
			fw.hdr[k] = append(fw.hdr[k], string(value))
		}
	}
	cl := int64(-1)
	if resp.Framing == h1parse.Length || resp.Framing == h1parse.NoBody {
		cl = resp.ContentLength
	}
	fw.relayHead(resp.Status, raw, cl, hasDate)
	if lr != nil && lr.status == 0 {
		lr.status = resp.Status
	}
	if resp.Framing == h1parse.NoBody {
		return
	}
	var buf []byte
	for {
		var n int
		var err error
		if room := fw.bodyRoom(); room != nil {
			// The rest of a body of known length fits where the writer
			// collects it: read there, as Write would have copied it.
			n, err = ex.Read(room)
			fw.took(n, lr)
		} else {
			if buf == nil {
				buf = h.rp.BufferPool.Get()
				defer h.rp.BufferPool.Put(buf)
			}
			n, err = ex.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					panic(http.ErrAbortHandler) // the client is gone: the connection closes
				}
			}
		}
		if n > 0 && err == nil && resp.Framing != h1parse.Length && ex.Buffered() == 0 {
			fw.Flush() // more would wait for the backend: send what came
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			h.px.logConn("backend response broke off", "id", pr.rc.ConnectionID, "route", pr.rc.RouteName,
				"target", pr.addr, "err", err)
			fw.Flush()
			panic(http.ErrAbortHandler)
		}
	}
}

// appendRelayedFields appends a backend response's field lines as the client gets them, each
// CRLF-terminated: framing and hop-by-hop fields (and the names Connection lists) left out,
// fields a response template sets replaced by the template's. hasDate: the lines hold a Date.
// The fast forward (relayResponse) and the event loop's HTTP mode (enginehttp_linux.go) both
// relay heads through it.
func appendRelayedFields(raw []byte, fields []h1parse.Field, tmpl []fwdTemplate) (_ []byte, hasDate bool) {
	var connBuf [2]h1parse.Field
	conns := connectionFields(fields, connBuf[:0])
	for _, f := range fields {
		if dropField(f.Name, conns, responseReplaced) || templated(tmpl, f.Name) {
			continue
		}
		hasDate = hasDate || h1parse.EqualFold(f.Name, "date")
		raw = append(raw, f.Name...)
		raw = append(raw, ": "...)
		raw = append(raw, f.Value...)
		raw = append(raw, "\r\n"...)
	}
	raw = appendTemplates(raw, tmpl, fastWriterOwns)
	for _, t := range tmpl {
		if t.name == "Date" {
			hasDate = t.value != "" // set by the template, or deleted (the writer then adds its own)
		}
	}
	return raw, hasDate
}

// relayedTrailers is the Trailer field a relayed chunked response announces: the names the
// backend's announced, less those a trailer may not carry (framing, routing: Content-Length,
// Transfer-Encoding, Host...), which are not relayed, announced or sent (Go's client, on the
// other stack, refuses such a response). "" when none is left.
func relayedTrailers(announced []byte) string {
	if announced == nil {
		return ""
	}
	var names []string
	for n := range strings.SplitSeq(string(announced), ",") {
		if n = strings.TrimSpace(n); n != "" && httpguts.ValidTrailerHeader(n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// fastWriterOwns: the fields the fastWriter sets itself (fastSkip), which
// a response template cannot set on this path.
func fastWriterOwns(name string) bool {
	switch name {
	case "Connection", "Content-Length", "Transfer-Encoding", "Trailer", "Keep-Alive":
		return true
	}
	return false
}
