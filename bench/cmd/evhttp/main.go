//go:build linux

// Command evhttp is internal/evloop's HTTP mode alone as an HTTP/1.1 relay: every request
// goes to one target, its head rewritten as a proxy must (hop-by-hop fields dropped,
// X-Forwarded-For/-Proto/-Host, X-Real-Ip and Forwarded set), the response head likewise,
// with no routing, checks, logs or metrics. It measures what the loop itself costs per
// request (bench/README, "HTTP on the event loop"): the floor under any proxy built on it.
//
//	evhttp -listen 127.0.0.1:18080 -target 127.0.0.1:19003
package main

import (
	"flag"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/gosmartproxy/smartproxy/internal/evloop"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "address to accept on")
	target := flag.String("target", "127.0.0.1:19003", "HTTP/1.1 backend")
	flag.Parse()
	la, err := netip.ParseAddrPort(*listen)
	if err != nil {
		log.Fatal(err)
	}
	ta, err := netip.ParseAddrPort(*target)
	if err != nil {
		log.Fatal(err)
	}
	s, err := evloop.Start(evloop.Config{
		Listen: la,
		OnOpen: func(c *evloop.Conn) evloop.Decision {
			c.Data = &relayConn{peer: c.Peer().Addr().String()}
			return evloop.Decision{HTTP: true}
		},
		OnRequest: func(c *evloop.Conn, req *h1parse.Request, raw []byte) evloop.HTTPPlan {
			rc := c.Data.(*relayConn)
			if req.Chunked || req.Upgrade || req.Expect || req.ContentLength > evloop.DefaultHTTPMaxHeld || req.Minor != 1 {
				return evloop.HTTPPlan{Respond: []byte("HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), Close: true}
			}
			rc.out = appendRequest(rc.out[:0], req, raw, rc.peer)
			m := string(req.Method)
			return evloop.HTTPPlan{Target: ta, Out: rc.out, Replayable: m == "GET" || m == "HEAD", Head: m == "HEAD", Close: req.Close}
		},
		OnResponse: func(c *evloop.Conn, resp *h1parse.Response, dst []byte) ([]byte, bool) {
			return appendResponse(dst, resp), true
		},
		OnExchangeEnd: func(c *evloop.Conn, status int, body int64, err error) []byte {
			if err != nil {
				return []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n") // the loop keeps the connection (the request was read whole)
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}

// relayConn is a connection's outgoing buffer (valid until its exchange ends) and peer.
type relayConn struct {
	out  []byte
	peer string
}

// hopByHop reports the fields a proxy does not pass on, or sets itself.
func hopByHop(name []byte) bool {
	for _, h := range hopNames[min(len(name), len(hopNames)-1)] {
		if h1parse.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// hopNames are hopByHop's names by length.
var hopNames = func() [20][]string {
	var t [20][]string
	for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding",
		"Upgrade", "Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "Forwarded"} {
		t[len(h)] = append(t[len(h)], h)
	}
	return t
}()

func appendRequest(b []byte, req *h1parse.Request, raw []byte, peer string) []byte {
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.Target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, req.Host...)
	b = append(b, "\r\n"...)
	for _, f := range req.Fields {
		if !hopByHop(f.Name) {
			b = append(append(append(append(b, f.Name...), ": "...), f.Value...), "\r\n"...)
		}
	}
	b = append(append(b, "X-Forwarded-For: "...), peer...)
	b = append(append(append(b, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "...), req.Host...), "\r\nX-Real-Ip: "...)
	b = append(append(append(b, peer...), "\r\nForwarded: for="...), peer...)
	b = append(append(append(b, ";host="...), req.Host...), ";proto=http\r\n\r\n"...)
	return append(b, raw[req.HeadLen:]...) // the held body
}

func appendResponse(b []byte, resp *h1parse.Response) []byte {
	b = strconv.AppendInt(append(b, "HTTP/1.1 "...), int64(resp.Status), 10)
	b = append(append(append(b, ' '), resp.Reason...), "\r\n"...)
	for _, f := range resp.Fields {
		if !hopByHop(f.Name) || h1parse.EqualFold(f.Name, "Transfer-Encoding") {
			b = append(append(append(append(b, f.Name...), ": "...), f.Value...), "\r\n"...)
		}
	}
	if resp.Framing == h1parse.UntilClose {
		b = append(b, "Transfer-Encoding: chunked\r\n"...) // the loop passes it on chunked
	}
	return append(b, "\r\n"...)
}
