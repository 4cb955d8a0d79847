// Command loadgen drives one benchmark scenario against one target (a
// proxy, or a backend directly) and prints one JSON result line. Every
// byte and every response is verified: a run with any error is marked
// "valid": false and must be reported as invalid, never as a number.
//
//	loadgen -wait 127.0.0.1:18001,127.0.0.1:18443      # wait until the ports accept
//	loadgen -scenario connrate -addr 127.0.0.1:18001 -pid 1234 -c 32 -duration 5s
//
// Scenarios: bulk, connrate, sni, tlsterm-full, tlsterm-resume, http,
// http-post, https (http.go), idle-rss, maxconns. With -pid the proxy's
// process tree is sampled: CPU time (utime+stime from /proc/PID/stat)
// over the measured window, RSS (VmRSS) and open fds; /proc/stat gives the
// load and proxy cores' utilisation.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Result is the JSON line loadgen prints.
type Result struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Round    int    `json:"round"`
	Valid    bool   `json:"valid"`
	Errors   int64  `json:"errors"`
	ErrorMsg string `json:"error_sample,omitempty"`
	Note     string `json:"note,omitempty"`

	Ops     int64   `json:"ops"`     // connections, handshakes, requests, or streams
	Seconds float64 `json:"seconds"` // measured window
	Rate    float64 `json:"rate"`    // ops/s, or Gbit/s for bulk
	Unit    string  `json:"unit"`    // unit of Rate
	P50us   float64 `json:"p50_us,omitempty"`
	P99us   float64 `json:"p99_us,omitempty"`

	ProxyCPUs     float64 `json:"proxy_cpu_s,omitempty"`     // proxy tree CPU seconds in the window
	PerProxyCPUs  float64 `json:"per_proxy_cpu_s,omitempty"` // ops (or Gbit) per proxy CPU-second
	ProxyCoreUtil float64 `json:"proxy_core_util,omitempty"` // 0..1, /proc/stat of the proxy core
	LoadCoreUtil  float64 `json:"load_core_util,omitempty"`  // 0..1, /proc/stat of the load core
	ProxyTreeUtil float64 `json:"proxy_tree_util,omitempty"` // proxy CPU-s / wall-s

	Conns          int     `json:"conns,omitempty"`
	RSSBeforeKiB   int64   `json:"rss_before_kib,omitempty"`
	RSSAfterKiB    int64   `json:"rss_after_kib,omitempty"`
	RSSPerConnKiB  float64 `json:"rss_per_conn_kib,omitempty"`
	FDsBefore      int     `json:"fds_before,omitempty"`
	FDsAfter       int     `json:"fds_after,omitempty"`
	ResumedPercent float64 `json:"resumed_percent,omitempty"`

	SlowOps int64            `json:"slow_ops,omitempty"` // ops that took over 900 ms (typically a 1 s SYN retransmission)
	TCP     map[string]int64 `json:"tcp,omitempty"`      // kernel TCP counter deltas over the window
}

var (
	scenario  = flag.String("scenario", "", "bulk|connrate|sni|tlsterm-full|tlsterm-resume|http|http-post|https|idle-rss|maxconns")
	addr      = flag.String("addr", "", "target address")
	target    = flag.String("label", "", "target label for the result line")
	round     = flag.Int("round", 0, "round number for the result line")
	pid       = flag.Int("pid", 0, "proxy PID whose process tree is sampled (0: none, a direct run)")
	proxyCPU  = flag.Int("proxy-cpu", 1, "core the proxy is pinned to")
	loadCPU   = flag.Int("load-cpu", 0, "core the load generator and backends are pinned to")
	duration  = flag.Duration("duration", 5*time.Second, "measured window (closed-loop scenarios)")
	warmup    = flag.Duration("warmup", 500*time.Millisecond, "unmeasured warm-up before the window")
	conc      = flag.Int("c", 32, "concurrent workers / connections")
	streams   = flag.Int("streams", 4, "bulk: parallel streams")
	mib       = flag.Int("mib", 256, "bulk: MiB each stream sends and reads back")
	nconns    = flag.Int("n", 9000, "idle-rss: idle connections to open")
	maxConns  = flag.Int("max", 19900, "maxconns: stop after this many")
	sni       = flag.String("sni", "echo.bench.test", "TLS server name")
	caFile    = flag.String("ca", "", "PEM file with the certificate to trust")
	waitAddrs = flag.String("wait", "", "comma-separated addresses: wait until all accept, then exit")
	waitFor   = flag.Duration("wait-timeout", 15*time.Second, "for -wait")
	settle    = flag.Duration("settle", time.Second, "idle-rss/maxconns: pause before sampling RSS")
	count     = flag.Int64("count", 0, "closed-loop scenarios: run exactly this many operations, no warm-up, instead of -duration (for per-connection syscall counts)")
)

func main() {
	flag.Parse()
	if *waitAddrs != "" {
		os.Exit(wait(strings.Split(*waitAddrs, ","), *waitFor))
	}
	res := &Result{Scenario: *scenario, Target: *target, Round: *round}
	var err error
	switch *scenario {
	case "bulk":
		err = runBulk(res)
	case "connrate":
		err = runClosedLoop(res, "conns/s", echoOp)
	case "sni", "tlsterm-full", "tlsterm-resume":
		err = runTLS(res)
	case "http", "http-post", "https":
		if *get != "" {
			os.Exit(probe(*get))
		}
		err = runHTTP(res)
	case "idle-rss":
		err = runIdle(res)
	case "maxconns":
		err = runMaxConns(res)
	default:
		fmt.Fprintln(os.Stderr, "loadgen: unknown -scenario", *scenario)
		os.Exit(2)
	}
	if err != nil {
		res.Valid = false
		if res.ErrorMsg == "" {
			res.ErrorMsg = err.Error()
		}
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

func wait(addrs []string, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "loadgen: %s does not accept: %v\n", a, err)
				return 1
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return 0
}

// ---- sampling -------------------------------------------------------------

const clkTck = 100 // USER_HZ on Linux

// treePIDs returns pid and all its descendants.
func treePIDs(root int) []int {
	if root <= 0 {
		return nil
	}
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		f := statFields(p)
		if len(f) > 2 {
			var pp int
			fmt.Sscanf(f[1], "%d", &pp)
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the comm: [0] is state.
func statFields(p int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// treeCPU is the CPU seconds (utime+stime) of pid's process tree.
func treeCPU(root int) float64 {
	var ticks int64
	for _, p := range treePIDs(root) {
		f := statFields(p)
		if len(f) > 13 {
			var u, s int64
			fmt.Sscanf(f[11], "%d", &u) // field 14 utime
			fmt.Sscanf(f[12], "%d", &s) // field 15 stime
			ticks += u + s
		}
	}
	return float64(ticks) / clkTck
}

func treeRSSKiB(root int) int64 {
	var kib int64
	for _, p := range treePIDs(root) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				var v int64
				fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &v)
				kib += v
			}
		}
	}
	return kib
}

func treeFDs(root int) int {
	n := 0
	for _, p := range treePIDs(root) {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		n += len(ents)
	}
	return n
}

type cpuTimes struct{ busy, total int64 }

func coreTimes() map[int]cpuTimes {
	out := map[int]cpuTimes{}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var id int
		fmt.Sscanf(f[0][3:], "%d", &id)
		var t cpuTimes
		for i, s := range f[1:] {
			var v int64
			fmt.Sscanf(s, "%d", &v)
			if i >= 8 { // guest, guest_nice are already counted in user
				break
			}
			t.total += v
			if i != 3 && i != 4 { // idle, iowait
				t.busy += v
			}
		}
		out[id] = t
	}
	return out
}

type sample struct {
	at    time.Time
	cpu   float64
	cores map[int]cpuTimes
	tcp   map[string]int64
}

func takeSample() sample {
	return sample{at: time.Now(), cpu: treeCPU(*pid), cores: coreTimes(), tcp: tcpCounters()}
}

// watchedTCP are kernel counters that explain stalls and resets (a SYN
// dropped or challenged costs a 1 s retransmission): their deltas over the
// window go into the result's tcp field when non-zero.
var watchedTCP = []string{
	"Tcp:EstabResets", "Tcp:OutRsts", "Tcp:RetransSegs", "TcpExt:ListenOverflows", "TcpExt:ListenDrops",
	"TcpExt:TCPTimeWaitOverflow", "TcpExt:PAWSEstab", "TcpExt:TCPChallengeACK", "TcpExt:TCPSYNChallenge",
	"TcpExt:TCPAbortOnClose", "TcpExt:TCPAbortOnData", "TcpExt:TCPAbortFailed", "TcpExt:TCPReqQFullDrop",
	"TcpExt:TCPTimeouts", "TcpExt:TCPSynRetrans",
}

func tcpCounters() map[string]int64 {
	out := map[string]int64{}
	for _, f := range []string{"/proc/net/snmp", "/proc/net/netstat"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(h) != len(v) || len(h) == 0 {
				continue
			}
			prefix := h[0]
			for j := 1; j < len(h); j++ {
				var x int64
				fmt.Sscanf(v[j], "%d", &x)
				out[prefix+h[j]] = x
			}
		}
	}
	return out
}

func tcpDelta(a, b sample) map[string]int64 {
	d := map[string]int64{}
	for _, k := range watchedTCP {
		if x := b.tcp[k] - a.tcp[k]; x != 0 {
			d[strings.SplitN(k, ":", 2)[1]] = x
		}
	}
	return d
}

// fill sets the window's seconds, rate, CPU and utilisation fields; work is
// what the rate counts (ops or Gbit).
func (r *Result) fill(a, b sample, work float64, unit string) {
	r.Seconds = b.at.Sub(a.at).Seconds()
	r.Rate = work / r.Seconds
	r.Unit = unit
	util := func(c int) float64 {
		x, y := a.cores[c], b.cores[c]
		if y.total == x.total {
			return 0
		}
		return float64(y.busy-x.busy) / float64(y.total-x.total)
	}
	r.LoadCoreUtil = util(*loadCPU)
	r.TCP = tcpDelta(a, b)
	if *pid > 0 {
		r.ProxyCoreUtil = util(*proxyCPU)
		r.ProxyCPUs = b.cpu - a.cpu
		r.ProxyTreeUtil = r.ProxyCPUs / r.Seconds
		if r.ProxyCPUs > 0 {
			r.PerProxyCPUs = work / r.ProxyCPUs
		}
	}
}

// ---- error accounting -----------------------------------------------------

type errCount struct {
	n     atomic.Int64
	mu    sync.Mutex
	first string
}

func (e *errCount) add(err error) {
	if e.n.Add(1) == 1 {
		e.mu.Lock()
		e.first = err.Error()
		e.mu.Unlock()
	}
}

func (e *errCount) apply(r *Result) {
	r.Errors = e.n.Load()
	r.Valid = r.Errors == 0
	e.mu.Lock()
	r.ErrorMsg = e.first
	e.mu.Unlock()
}

// ---- bulk -----------------------------------------------------------------

// Each stream sends a pseudo-random block (seeded per stream) cycled to
// mib MiB, half-closes, and checks every byte echoed back, then EOF. The
// block length is odd-sized so that a dropped, duplicated or reordered
// chunk can never line up with the pattern again.
const blockLen = 1<<20 + 4093

func streamBlock(i int) []byte {
	r := rand.New(rand.NewPCG(uint64(i)+1, 0x5eed))
	b := make([]byte, blockLen)
	for j := 0; j+8 <= len(b); j += 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func runBulk(res *Result) error {
	total := int64(*mib) << 20
	var errs errCount
	conns := make([]*net.TCPConn, *streams)
	blocks := make([][]byte, *streams)
	for i := range conns {
		c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
		if err != nil {
			return err
		}
		conns[i] = c.(*net.TCPConn)
		blocks[i] = streamBlock(i)
		defer c.Close()
	}
	var wg sync.WaitGroup
	a := takeSample()
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
		blk := blocks[i]
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			const chunk = 256 << 10
			var off, sent int64
			for sent < total {
				n := min(int64(chunk), total-sent, int64(blockLen)-off)
				if _, err := c.Write(blk[off : off+n]); err != nil {
					errs.add(fmt.Errorf("stream %d write: %w", i, err))
					return
				}
				sent += n
				off = (off + n) % blockLen
			}
			if err := c.CloseWrite(); err != nil {
				errs.add(fmt.Errorf("stream %d closewrite: %w", i, err))
			}
		}()
		go func() { // reader + verifier
			defer wg.Done()
			buf := make([]byte, 256<<10)
			var off, got int64
			for {
				n, err := c.Read(buf)
				p := buf[:n]
				for len(p) > 0 {
					m := min(int64(len(p)), int64(blockLen)-off)
					if got+m > total {
						errs.add(fmt.Errorf("stream %d: more bytes echoed than sent", i))
						return
					}
					if !bytes.Equal(p[:m], blk[off:off+m]) {
						errs.add(fmt.Errorf("stream %d: corrupted bytes near offset %d", i, got))
						return
					}
					p = p[m:]
					got += m
					off = (off + m) % blockLen
				}
				if err == io.EOF {
					if got != total {
						errs.add(fmt.Errorf("stream %d: EOF after %d of %d bytes", i, got, total))
					}
					return
				}
				if err != nil {
					errs.add(fmt.Errorf("stream %d read after %d bytes: %w", i, got, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	b := takeSample()
	gbit := float64(total) * float64(*streams) * 8 / 1e9
	res.fill(a, b, gbit, "Gbit/s")
	res.Ops = int64(*streams)
	res.Note = fmt.Sprintf("%d streams x %d MiB echoed; Gbit/s = payload one way (the proxy forwards twice that)", *streams, *mib)
	errs.apply(res)
	return nil
}

// ---- closed loop ----------------------------------------------------------

// worker state passed to an op.
type worker struct {
	id      int
	seq     uint64
	payload [64]byte
	reply   [64]byte
	state   any
	resumed int64 // measured ops that resumed a TLS session
	didRes  bool  // the last op resumed
}

// runClosedLoop runs op in conc workers for warmup+duration and counts
// the ops that complete inside the measured window.
func runClosedLoop(res *Result, unit string, op func(*worker) error) error {
	return runClosedLoopInit(res, unit, nil, op)
}

func runClosedLoopInit(res *Result, unit string, init func(*worker), op func(*worker) error) error {
	var (
		phase atomic.Int32 // 0 warm-up, 1 measuring, 2 stop
		errs  errCount
		wg    sync.WaitGroup
	)
	lats := make([][]time.Duration, *conc)
	ops := make([]int64, *conc)
	// With -count every operation is measured and the loop ends after exactly that many
	// successful ones (tickets are taken before each op; a failed op returns its ticket).
	var tickets atomic.Int64
	tickets.Store(*count)
	var a, b sample
	if *count > 0 {
		a = takeSample()
		phase.Store(1)
	}
	workers := make([]*worker, *conc)
	for i := range *conc {
		w := &worker{id: i}
		if init != nil {
			init(w)
		}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<16)
			for {
				ph := phase.Load()
				if ph == 2 {
					break
				}
				if *count > 0 && tickets.Add(-1) < 0 {
					break
				}
				t0 := time.Now()
				err := op(w)
				d := time.Since(t0)
				if err != nil {
					if *count > 0 {
						tickets.Add(1)
					}
					errs.add(err)
					if errs.n.Load() > 1000 {
						break
					}
					continue
				}
				if ph == 1 && phase.Load() == 1 {
					lat = append(lat, d)
					ops[i]++
					if w.didRes {
						w.resumed++
					}
				}
			}
			lats[i] = lat
		}()
	}
	if *count > 0 {
		wg.Wait()
		b = takeSample()
	} else {
		time.Sleep(*warmup)
		a = takeSample()
		phase.Store(1)
		time.Sleep(*duration)
		phase.Store(2)
		b = takeSample()
		wg.Wait()
	}
	var all []time.Duration
	var n, resumed, slow int64
	for i := range lats {
		all = append(all, lats[i]...)
		for _, d := range lats[i] {
			if d > 900*time.Millisecond {
				slow++
			}
		}
		n += ops[i]
		resumed += workers[i].resumed
	}
	res.Ops = n
	res.SlowOps = slow
	res.fill(a, b, float64(n), unit)
	if len(all) > 0 {
		slices.Sort(all)
		res.P50us = float64(all[len(all)/2].Microseconds())
		res.P99us = float64(all[len(all)*99/100].Microseconds())
	}
	if *scenario == "tlsterm-resume" && n > 0 {
		res.ResumedPercent = 100 * float64(resumed) / float64(n)
	}
	errs.apply(res)
	if n == 0 && res.Valid {
		res.Valid = false
		res.ErrorMsg = "no operation completed"
	}
	return nil
}

func (w *worker) fillPayload() {
	w.seq++
	for i := range w.payload {
		w.payload[i] = byte(uint64(w.id)*31 + w.seq*7 + uint64(i))
	}
}

// echoOp: connect, 64-byte echo, verify, close.
func echoOp(w *worker) error {
	c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return echo64(w, c)
}

func echo64(w *worker, c net.Conn) error {
	w.fillPayload()
	if _, err := c.Write(w.payload[:]); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, w.reply[:]); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if w.reply != w.payload {
		return errors.New("echo mismatch")
	}
	return nil
}

// ---- TLS ------------------------------------------------------------------

func tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName:       *sni,
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519}, // what OpenSSL 3.0 peers also do; no ML-KEM hybrid
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("no certificate in " + *caFile)
		}
		cfg.RootCAs = pool
	} else {
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

// runTLS: full TLS 1.3 handshake (or resumed, tlsterm-resume), one 64-byte
// echo, close. The certificate chain is verified against -ca.
func runTLS(res *Result) error {
	base, err := tlsConfig()
	if err != nil {
		return err
	}
	resume := *scenario == "tlsterm-resume"
	init := func(w *worker) {
		cfg := base.Clone()
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		}
		w.state = cfg
	}
	op := func(w *worker) error {
		cfg := w.state.(*tls.Config)
		d := &net.Dialer{Timeout: 5 * time.Second}
		raw, err := d.Dial("tcp", *addr)
		if err != nil {
			return err
		}
		c := tls.Client(raw, cfg)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.HandshakeContext(context.Background()); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if err := echo64(w, c); err != nil {
			return err
		}
		st := c.ConnectionState()
		if st.Version != tls.VersionTLS13 {
			return fmt.Errorf("negotiated %x, want TLS 1.3", st.Version)
		}
		w.didRes = st.DidResume
		return nil
	}
	if err := runClosedLoopInit(res, "handshakes/s", init, op); err != nil {
		return err
	}
	if resume {
		if res.ResumedPercent < 90 {
			res.Note = fmt.Sprintf("only %.0f%% of handshakes resumed", res.ResumedPercent)
		}
	}
	return nil
}

// ---- idle connections -----------------------------------------------------

// openRouted dials, sends one byte and reads it back, so the connection is
// known to be routed all the way to the backend.
func openRouted(i int, timeout time.Duration) (net.Conn, error) {
	c, err := dialTimeout(timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	b := [1]byte{byte(i)}
	if _, err := c.Write(b[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("write: %w", err)
	}
	var r [1]byte
	if _, err := io.ReadFull(c, r[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("read: %w", err)
	}
	if r != b {
		c.Close()
		return nil, errors.New("echo mismatch")
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// openMany opens up to n routed connections with 64 dialers; stopOnErr
// stops at the first failure. It returns the connections and errors.
func openMany(n int, timeout time.Duration, stopOnErr bool, errs *errCount) []net.Conn {
	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, n)
		next  atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := openRouted(int(i), timeout)
				if err != nil {
					errs.add(err)
					if stopOnErr {
						stop.Store(true)
					}
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns
}

func runIdle(res *Result) error {
	time.Sleep(*settle)
	res.RSSBeforeKiB, res.FDsBefore = treeRSSKiB(*pid), treeFDs(*pid)
	var errs errCount
	t0 := time.Now()
	conns := openMany(*nconns, 10*time.Second, false, &errs)
	open := time.Since(t0)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(*settle)
	// Every connection must still be alive: probe a sample of them again.
	for i := 0; i < len(conns); i += max(1, len(conns)/100) {
		c := conns[i]
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b := [1]byte{7}
		var r [1]byte
		if _, err := c.Write(b[:]); err != nil {
			errs.add(fmt.Errorf("probe write: %w", err))
		} else if _, err := io.ReadFull(c, r[:]); err != nil || r != b {
			errs.add(fmt.Errorf("probe read: %v", err))
		}
	}
	time.Sleep(200 * time.Millisecond)
	res.RSSAfterKiB, res.FDsAfter = treeRSSKiB(*pid), treeFDs(*pid)
	res.Conns = len(conns)
	res.Ops = int64(len(conns))
	res.Seconds = open.Seconds()
	res.Unit = "KiB/conn"
	if *pid > 0 && len(conns) > 0 {
		res.RSSPerConnKiB = float64(res.RSSAfterKiB-res.RSSBeforeKiB) / float64(len(conns))
		res.Rate = res.RSSPerConnKiB
	}
	errs.apply(res)
	res.Note = fmt.Sprintf("%d idle conns; proxy fds %d -> %d", len(conns), res.FDsBefore, res.FDsAfter)
	return nil
}

func runMaxConns(res *Result) error {
	time.Sleep(200 * time.Millisecond)
	res.RSSBeforeKiB, res.FDsBefore = treeRSSKiB(*pid), treeFDs(*pid)
	var errs errCount
	t0 := time.Now()
	conns := openMany(*maxConns, 3*time.Second, true, &errs)
	res.Seconds = time.Since(t0).Seconds()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	res.RSSAfterKiB, res.FDsAfter = treeRSSKiB(*pid), treeFDs(*pid)
	if err := holdOpen(len(conns)); err != nil {
		return err
	}
	res.Conns = len(conns)
	res.Ops = int64(len(conns))
	res.Rate = float64(len(conns))
	res.Unit = "conns"
	res.Errors = errs.n.Load()
	errs.mu.Lock()
	first := errs.first
	errs.mu.Unlock()
	// Failing is the point of this scenario: the result is valid when some
	// connections were held and the limit is explained.
	res.Valid = len(conns) > 0
	switch {
	case res.Errors == 0:
		res.Note = fmt.Sprintf("held all %d (loadgen's own limit)", len(conns))
	case strings.Contains(first, syscall.EMFILE.Error()):
		res.Note = "stopped by loadgen's own fd cap: " + first
	default:
		res.Note = "first failure: " + first
	}
	res.Note += fmt.Sprintf("; proxy fds %d -> %d", res.FDsBefore, res.FDsAfter)
	return nil
}
