// Command h1cmp compares HTTP/1.1 keep-alive proxy loops (fasthttp, our
// own h1parse loop, the smartproxy library as it is) by proxy CPU-seconds
// and allocations per request: the measurement behind issue 17's choice
// (bench/README.md, "HTTP/1.1 fast path: fasthttp or our own loop"). It
// is a module of its own so that fasthttp never becomes a dependency of
// smartproxy. Run from this directory:
//
//	go build -o /tmp/h1cmp . && /tmp/h1cmp -mode own -dur 2s [-body 16384]
//
// The proxy runs in a child process with GOMAXPROCS=1; its CPU time
// (getrusage) and runtime.MemStats.Mallocs are sampled by SIGUSR1 at the
// start and end of the window, after a 0.5 s warm-up; the clients and a
// raw keep-alive backend (1 KiB responses) run in the parent.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/internal/h1parse"
	"github.com/valyala/fasthttp"
)

const respBody = 1024

func main() {
	if len(os.Args) > 1 && os.Args[1] == "proxy" {
		proxyMain(os.Args[2], os.Args[3], os.Args[4])
		return
	}
	mode := flag.String("mode", "own", "own | fasthttp | smartproxy (defaults: the HTTP/1.1 fast path; smartproxy-fast is the same) | smartproxy-nethttp")
	conns := flag.Int("conns", 32, "keep-alive client connections")
	dur := flag.Duration("dur", 3*time.Second, "measured window")
	body := flag.Int("body", 0, "request body bytes (POST) or 0 (GET)")
	flag.Parse()
	bench(*mode, *conns, *dur, *body)
}

// ---- proxy process ----

func proxyMain(mode, listen, backend string) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			var ru syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			fmt.Printf("%d %d\n", cpu.Nanoseconds(), ms.Mallocs)
		}
	}()
	switch mode {
	case "own":
		ln, err := net.Listen("tcp", listen)
		must(err)
		pool := &bpool{addr: backend}
		fmt.Println("ready")
		for {
			c, err := ln.Accept()
			must(err)
			go ownServe(c, pool)
		}
	case "fasthttp":
		hc := &fasthttp.HostClient{Addr: backend, MaxConns: 4096}
		s := &fasthttp.Server{StreamRequestBody: true, Handler: func(ctx *fasthttp.RequestCtx) {
			req := &ctx.Request
			req.Header.Del("Connection")
			req.Header.Set("X-Forwarded-For", ctx.RemoteIP().String())
			req.Header.Set("X-Forwarded-Proto", "http")
			if err := hc.Do(req, &ctx.Response); err != nil {
				ctx.Error("502 bad gateway", 502)
			}
		}}
		ln, err := net.Listen("tcp", listen)
		must(err)
		fmt.Println("ready")
		must(s.Serve(ln))
	case "smartproxy", "smartproxy-fast", "smartproxy-nethttp":
		_, ps, _ := net.SplitHostPort(listen)
		port, _ := strconv.Atoi(ps)
		p, err := smartproxy.New(smartproxy.Options{
			Routes:                       []smartproxy.Route{smartproxy.HTTPRoute("http", []string{"*"}, backend, smartproxy.HTTPPort(port))},
			MaxConnectionsPerIP:          -1,
			DisableHTTPFastPath:          mode == "smartproxy-nethttp",
			ConnectionRateLimitPerMinute: -1,
		})
		must(err)
		must(p.Start(context.Background()))
		fmt.Println("ready")
		select {}
	}
}

// bpool is a pool of backend connections with their read buffers.
type bpool struct {
	addr string
	mu   sync.Mutex
	idle []*bconn
}

type bconn struct {
	net.Conn
	buf []byte
	n   int
}

func (p *bpool) get() (*bconn, error) {
	p.mu.Lock()
	if k := len(p.idle); k > 0 {
		c := p.idle[k-1]
		p.idle = p.idle[:k-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &bconn{Conn: c, buf: make([]byte, 16<<10)}, nil
}

func (p *bpool) put(c *bconn) {
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
	"transfer-encoding", "content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}

// ownServe is the prototype fast loop: head read once into a reused
// buffer, strictly parsed, forwarded in one write to a pooled backend
// connection, response relayed in one write when it fits the buffer.
func ownServe(c net.Conn, pool *bpool) {
	defer c.Close()
	buf := make([]byte, 16<<10)
	out := make([]byte, 0, 4<<10)
	n := 0
	var r h1parse.Request
	ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	for {
		err := h1parse.Parse(buf[:n], &r)
		if err == h1parse.ErrIncomplete {
			if n == len(buf) {
				return
			}
			m, rerr := c.Read(buf[n:])
			if rerr != nil {
				return
			}
			n += m
			continue
		}
		if err != nil || r.Chunked || r.Upgrade {
			_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		out = append(out[:0], r.Method...)
		out = append(out, ' ')
		out = append(out, r.Target...)
		out = append(out, " HTTP/1.1\r\n"...)
	fields:
		for _, f := range r.Fields {
			for _, h := range hopByHop {
				if len(f.Name) == len(h) && strings.EqualFold(string(f.Name), h) {
					continue fields
				}
			}
			out = append(out, f.Name...)
			out = append(out, ": "...)
			out = append(out, f.Value...)
			out = append(out, "\r\n"...)
		}
		out = append(out, "X-Forwarded-For: "...)
		out = append(out, ip...)
		out = append(out, "\r\nX-Forwarded-Proto: http\r\n"...)
		if r.ContentLength >= 0 {
			out = append(out, "Content-Length: "...)
			out = strconv.AppendInt(out, r.ContentLength, 10)
			out = append(out, "\r\n"...)
		}
		out = append(out, "\r\n"...)
		body := max(r.ContentLength, 0)
		have := min(int64(n-r.HeadLen), body)
		out = append(out, buf[r.HeadLen:r.HeadLen+int(have)]...)
		consumed := r.HeadLen + int(have)
		copy(buf, buf[consumed:n])
		n -= consumed
		bc, err := pool.get()
		if err != nil {
			return
		}
		if _, err := bc.Write(out); err != nil {
			bc.Close()
			return
		}
		if rem := body - have; rem > 0 {
			if _, err := io.CopyN(bc, c, rem); err != nil {
				bc.Close()
				return
			}
		}
		if !relayResponse(bc, c) {
			bc.Close()
			return
		}
		pool.put(bc)
		if r.Close {
			return
		}
	}
}

// relayResponse reads one Content-Length response from bc and writes it
// to c, in one write when it fits bc's buffer.
func relayResponse(bc *bconn, c net.Conn) bool {
	for {
		end := bytes.Index(bc.buf[:bc.n], []byte("\r\n\r\n"))
		if end >= 0 {
			head := bc.buf[:end+4]
			i := bytes.Index(head, []byte("\r\nContent-Length: "))
			if i < 0 {
				return false
			}
			j := bytes.IndexByte(head[i+18:], '\r')
			cl, err := strconv.Atoi(string(head[i+18 : i+18+j]))
			if err != nil {
				return false
			}
			total := end + 4 + cl
			for bc.n < total && bc.n < len(bc.buf) {
				m, err := bc.Read(bc.buf[bc.n:])
				if err != nil {
					return false
				}
				bc.n += m
			}
			w := min(total, bc.n)
			if _, err := c.Write(bc.buf[:w]); err != nil {
				return false
			}
			if w < total {
				if _, err := io.CopyN(c, bc, int64(total-w)); err != nil {
					return false
				}
			}
			copy(bc.buf, bc.buf[w:bc.n])
			bc.n -= w
			return true
		}
		if bc.n == len(bc.buf) {
			return false
		}
		m, err := bc.Read(bc.buf[bc.n:])
		if err != nil {
			return false
		}
		bc.n += m
	}
}

// ---- load side: backend and clients ----

func backendServe(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 32<<10)
	resp := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", respBody, strings.Repeat("x", respBody)))
	for {
		cl := 0
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
			if bytes.HasPrefix(bytes.ToLower(line), []byte("content-length:")) {
				cl, _ = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
			}
		}
		if cl > 0 {
			if _, err := br.Discard(cl); err != nil {
				return
			}
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

func bench(mode string, conns int, dur time.Duration, body int) {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go func() {
		for {
			c, err := bln.Accept()
			if err != nil {
				return
			}
			go backendServe(c)
		}
	}()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	paddr := pl.Addr().String()
	pl.Close()
	cmd := exec.Command(os.Args[0], "proxy", mode, paddr, bln.Addr().String())
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	must(cmd.Start())
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	sc.Scan() // ready
	for {
		if c, err := net.Dial("tcp", paddr); err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var req []byte
	if body > 0 {
		req = []byte(fmt.Sprintf("POST /post HTTP/1.1\r\nHost: bench.test\r\nContent-Length: %d\r\n\r\n%s", body, strings.Repeat("b", body)))
	} else {
		req = []byte("GET /1k HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: h1cmp\r\nAccept: */*\r\n\r\n")
	}
	var count, errs atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", paddr)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 8<<10)
			for !stop.Load() {
				if _, err := c.Write(req); err != nil {
					errs.Add(1)
					return
				}
				resp, err := readResp(br)
				if err != nil || resp != respBody {
					errs.Add(1)
					return
				}
				count.Add(1)
			}
		}()
	}
	snap := func() (int64, int64, int64) {
		_ = cmd.Process.Signal(syscall.SIGUSR1)
		sc.Scan()
		var cpu, mallocs int64
		fmt.Sscan(sc.Text(), &cpu, &mallocs)
		return count.Load(), cpu, mallocs
	}
	time.Sleep(500 * time.Millisecond)
	r0, c0, m0 := snap()
	time.Sleep(dur)
	r1, c1, m1 := snap()
	stop.Store(true)
	wg.Wait()
	reqs := r1 - r0
	cpuS := float64(c1-c0) / 1e9
	fmt.Printf("mode=%s body=%d conns=%d reqs=%d errors=%d proxyCPU=%.2fs req/CPU-s=%.0f µsCPU/req=%.1f allocs/req=%.1f (shared machine)\n",
		mode, body, conns, reqs, errs.Load(), cpuS, float64(reqs)/cpuS, cpuS*1e6/float64(reqs), float64(m1-m0)/float64(reqs))
}

// readResp reads one response and returns its body length.
func readResp(br *bufio.Reader) (int, error) {
	cl := -1
	line, err := br.ReadSlice('\n')
	if err != nil || !bytes.HasPrefix(line, []byte("HTTP/1.1 200")) {
		return 0, fmt.Errorf("status %q %v", line, err)
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		if bytes.HasPrefix(bytes.ToLower(line), []byte("content-length:")) {
			cl, _ = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
		}
	}
	if cl < 0 {
		return 0, fmt.Errorf("no content-length")
	}
	_, err = br.Discard(cl)
	return cl, err
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
