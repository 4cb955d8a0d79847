// Command benchreport reads the JSON lines written by loadgen (one per
// run, plus {"scenario","target","na"} lines for targets that cannot run a
// scenario) and prints one Markdown table per scenario with each target's
// median over its valid runs, its ratio to the best peer and to direct.
//
//	benchreport results.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
)

type result struct {
	Scenario      string           `json:"scenario"`
	Target        string           `json:"target"`
	NA            string           `json:"na"`
	Valid         bool             `json:"valid"`
	Errors        int64            `json:"errors"`
	ErrorMsg      string           `json:"error_sample"`
	Note          string           `json:"note"`
	Rate          float64          `json:"rate"`
	Unit          string           `json:"unit"`
	P50           float64          `json:"p50_us"`
	P99           float64          `json:"p99_us"`
	PerCPU        float64          `json:"per_proxy_cpu_s"`
	ProxyTreeUtil float64          `json:"proxy_tree_util"`
	ProxyCoreUtil float64          `json:"proxy_core_util"`
	LoadCoreUtil  float64          `json:"load_core_util"`
	Conns         int              `json:"conns"`
	RSSPerConn    float64          `json:"rss_per_conn_kib"`
	FDsBefore     int              `json:"fds_before"`
	FDsAfter      int              `json:"fds_after"`
	Resumed       float64          `json:"resumed_percent"`
	SlowOps       int64            `json:"slow_ops"`
	TCP           map[string]int64 `json:"tcp"`
}

var scenarioOrder = []string{"bulk", "connrate", "sni", "tlsterm-full", "tlsterm-resume", "http", "http-post", "https", "idle-rss", "maxconns"}
var targetOrder = []string{"direct", "smartproxy", "smartproxy-nethttp", "smartproxy-fast", "smartproxy-gr", "smartproxy-ev", "haproxy", "haproxy-splice", "nginx", "evloop-floor"}

// peers are the targets "best peer" is taken from. haproxy-splice (HAProxy
// with option splice-auto) runs in bulk only.
var peers = map[string]bool{"haproxy": true, "haproxy-splice": true, "nginx": true}

var titles = map[string]string{
	"bulk":           "bulk: 4 streams echoed through the proxy (Gbit/s of payload, one way)",
	"connrate":       "connrate: connect, 64-byte echo, close (closed loop)",
	"sni":            "sni: TLS 1.3 passthrough routed by SNI, full handshake + 64-byte echo + close",
	"tlsterm-full":   "tlsterm-full: TLS 1.3 terminated by the proxy, full handshakes (ECDSA P-256, X25519)",
	"tlsterm-resume": "tlsterm-resume: TLS 1.3 terminated by the proxy, resumed handshakes (PSK tickets)",
	"http":           "http: HTTP/1.1 keep-alive, 1 KiB responses",
	"http-post":      "http-post: HTTP/1.1 keep-alive, POST with a 16 KiB body (Content-Length), 1 KiB responses",
	"https":          "https: HTTP/1.1 keep-alive over TLS 1.3 terminated by the proxy (AES-128-GCM), 1 KiB responses",
	"idle-rss":       "idle-rss: proxy RSS per idle proxied connection (lower is better)",
	"maxconns":       "maxconns: most concurrent proxied connections held (fd cap 20,000 per process)",
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type agg struct {
	na                                  string
	runs, invalid                       int
	firstErr, note                      string
	rate, perCPU, p50, p99, util, lutil []float64
	rss, conns, fdsB, fdsA, resumed     []float64
	unit                                string
	slow                                int64
	tcp                                 map[string]int64
}

func (a *agg) m(xs []float64) float64 { return median(xs) }

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: benchreport results.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	data := map[string]map[string]*agg{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			fmt.Fprintf(os.Stderr, "skipping bad line: %v\n", err)
			continue
		}
		if data[r.Scenario] == nil {
			data[r.Scenario] = map[string]*agg{}
		}
		a := data[r.Scenario][r.Target]
		if a == nil {
			a = &agg{}
			data[r.Scenario][r.Target] = a
		}
		if r.NA != "" {
			a.na = r.NA
			continue
		}
		a.runs++
		a.slow += r.SlowOps
		for k, v := range r.TCP {
			if a.tcp == nil {
				a.tcp = map[string]int64{}
			}
			a.tcp[k] += v
		}
		if r.Unit != "" {
			a.unit = r.Unit
		}
		if r.Note != "" {
			a.note = r.Note
		}
		if !r.Valid {
			a.invalid++
			if a.firstErr == "" {
				a.firstErr = fmt.Sprintf("%d errors, first: %s", r.Errors, r.ErrorMsg)
			}
			continue
		}
		a.rate = append(a.rate, r.Rate)
		a.perCPU = append(a.perCPU, r.PerCPU)
		a.p50 = append(a.p50, r.P50)
		a.p99 = append(a.p99, r.P99)
		a.util = append(a.util, r.ProxyTreeUtil)
		a.lutil = append(a.lutil, r.LoadCoreUtil)
		a.rss = append(a.rss, r.RSSPerConn)
		a.conns = append(a.conns, float64(r.Conns))
		a.fdsB = append(a.fdsB, float64(r.FDsBefore))
		a.fdsA = append(a.fdsA, float64(r.FDsAfter))
		a.resumed = append(a.resumed, r.Resumed)
	}
	for _, s := range scenarioOrder {
		if t := data[s]; t != nil {
			printScenario(s, t)
		}
	}
}

func targets(t map[string]*agg) []string {
	var out []string
	for _, name := range targetOrder {
		if t[name] != nil {
			out = append(out, name)
		}
	}
	for name := range t {
		if !slices.Contains(targetOrder, name) {
			out = append(out, name)
		}
	}
	return out
}

func num(x float64) string {
	switch {
	case math.IsNaN(x):
		return "–"
	case x >= 1000:
		return commas(int64(math.Round(x)))
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ratio(x, ref float64) string {
	if math.IsNaN(x) || math.IsNaN(ref) || ref == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x/ref)
}

func pct(x float64) string {
	if math.IsNaN(x) || x == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*x)
}

func validity(a *agg) string {
	if a.invalid == 0 {
		return fmt.Sprintf("%d/%d", a.runs, a.runs)
	}
	return fmt.Sprintf("%d/%d (invalid: %s)", a.runs-a.invalid, a.runs, a.firstErr)
}

func printScenario(s string, t map[string]*agg) {
	fmt.Printf("\n### %s\n\n", titles[s])
	names := targets(t)
	usable := func(a *agg) bool { return a.na == "" && len(a.rate) > 0 }
	switch s {
	case "idle-rss":
		best := math.NaN()
		for _, n := range names {
			if a := t[n]; peers[n] && usable(a) && (math.IsNaN(best) || a.m(a.rss) < best) {
				best = a.m(a.rss)
			}
		}
		fmt.Println("| target | RSS per idle conn | vs best peer | idle conns | proxy fds before → after | valid runs |")
		fmt.Println("|---|---|---|---|---|---|")
		for _, n := range names {
			a := t[n]
			switch {
			case a.na != "":
				fmt.Printf("| %s | n/a (%s) | | | | |\n", n, a.na)
			case !usable(a):
				fmt.Printf("| %s | **invalid** | | | | %s |\n", n, validity(a))
			case n == "direct":
				fmt.Printf("| %s | (no proxy) | | %s | | %s |\n", n, num(a.m(a.conns)), validity(a))
			default:
				fmt.Printf("| %s | %.1f KiB | %s | %s | %s → %s | %s |\n", n, a.m(a.rss), ratio(a.m(a.rss), best),
					num(a.m(a.conns)), fmt.Sprintf("%.0f", a.m(a.fdsB)), fmt.Sprintf("%.0f", a.m(a.fdsA)), validity(a))
			}
		}
		return
	case "maxconns":
		best := math.NaN()
		for _, n := range names {
			if a := t[n]; peers[n] && usable(a) && (math.IsNaN(best) || a.m(a.rate) > best) {
				best = a.m(a.rate)
			}
		}
		fmt.Println("| target | conns held | vs best peer | proxy fds before → after | what stopped it (last run) |")
		fmt.Println("|---|---|---|---|---|")
		for _, n := range names {
			a := t[n]
			switch {
			case a.na != "":
				fmt.Printf("| %s | n/a (%s) | | | |\n", n, a.na)
			case !usable(a):
				fmt.Printf("| %s | **invalid** | | | %s |\n", n, validity(a))
			case n == "direct":
				fmt.Printf("| %s | %s | – | (no proxy) | %s |\n", n, num(a.m(a.rate)), strings.ReplaceAll(a.note, "|", "/"))
			default:
				fmt.Printf("| %s | %s | %s | %s → %s | %s |\n", n, num(a.m(a.rate)), ratio(a.m(a.rate), best),
					fmt.Sprintf("%.0f", a.m(a.fdsB)), fmt.Sprintf("%.0f", a.m(a.fdsA)), strings.ReplaceAll(a.note, "|", "/"))
			}
		}
		return
	}

	// Rate scenarios: pick the headline. If every proxy saturated its core
	// (>= 85 % of one CPU), throughput compares proxies; otherwise the load
	// core is the bottleneck and work per proxy CPU-second is the headline.
	saturated, anyProxy := true, false
	for _, n := range names {
		if a := t[n]; n != "direct" && usable(a) {
			anyProxy = true
			if a.m(a.util) < 0.85 {
				saturated = false
			}
		}
	}
	// The HTTP scenarios' target (issue 17) is work per proxy CPU-second, so
	// that is their headline even when every proxy saturated its core.
	cpuTarget := strings.HasPrefix(s, "http")
	perCPU := anyProxy && (!saturated || cpuTarget)
	head := func(a *agg) float64 {
		if perCPU {
			return a.m(a.perCPU)
		}
		return a.m(a.rate)
	}
	unit := ""
	for _, n := range names {
		if t[n].unit != "" {
			unit = t[n].unit
		}
	}
	perUnit := strings.TrimSuffix(unit, "/s") + " per proxy CPU-s"
	switch {
	case perCPU && saturated:
		fmt.Printf("Headline: **%s** (every proxy saturated its core, but this scenario's target is per proxy CPU-second).\n\n", perUnit)
	case perCPU:
		fmt.Printf("Headline: **%s** (the proxies did not saturate their core; the load core did the limiting).\n\n", perUnit)
	default:
		fmt.Printf("Headline: **%s** (every proxy saturated its core).\n\n", unit)
	}
	best := math.NaN()
	for _, n := range names {
		if a := t[n]; peers[n] && usable(a) && (math.IsNaN(best) || head(a) > best) {
			best = head(a)
		}
	}
	direct := math.NaN()
	if a := t["direct"]; a != nil && usable(a) {
		direct = a.m(a.rate)
	}
	lat := s != "bulk"
	fmt.Printf("| target | %s | vs best peer | %s | vs direct |", perUnit, unit)
	if lat {
		fmt.Print(" p50 / p99 µs |")
	}
	fmt.Print(" proxy CPU (of 1 core) | load core busy | valid runs |")
	if s == "tlsterm-resume" {
		fmt.Print(" resumed |")
	}
	fmt.Println()
	cols := 8
	if lat {
		cols++
	}
	if s == "tlsterm-resume" {
		cols++
	}
	fmt.Println("|" + strings.Repeat("---|", cols))
	for _, n := range names {
		a := t[n]
		label := n
		if a.na != "" {
			fmt.Printf("| %s | n/a (%s) |%s\n", label, a.na, strings.Repeat(" |", cols-1))
			continue
		}
		if !usable(a) {
			fmt.Printf("| %s | **invalid** |%s %s |\n", label, strings.Repeat(" |", cols-3), validity(a))
			continue
		}
		pc, vsPeer := "–", "–"
		if n != "direct" {
			pc = num(a.m(a.perCPU))
			vsPeer = ratio(head(a), best)
		}
		fmt.Printf("| %s | %s | %s | %s | %s |", label, pc, vsPeer, num(a.m(a.rate)), ratio(a.m(a.rate), direct))
		if lat {
			fmt.Printf(" %s / %s |", num(a.m(a.p50)), num(a.m(a.p99)))
		}
		u := "–"
		if n != "direct" {
			u = pct(a.m(a.util))
		}
		fmt.Printf(" %s | %s | %s |", u, pct(a.m(a.lutil)), validity(a))
		if s == "tlsterm-resume" {
			fmt.Printf(" %.0f %% |", a.m(a.resumed))
		}
		fmt.Println()
	}
	// Stalls and resets, summed over all runs: a dropped or challenged SYN
	// costs a 1 s retransmission and shows up in p99.
	var notes []string
	for _, n := range names {
		a := t[n]
		var parts []string
		if a.slow > 0 {
			parts = append(parts, fmt.Sprintf("%d ops > 0.9 s", a.slow))
		}
		for _, k := range []string{"ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPTimeWaitOverflow", "TCPChallengeACK", "PAWSEstab"} {
			if v := a.tcp[k]; v != 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, v))
			}
		}
		if len(parts) > 0 {
			notes = append(notes, n+": "+strings.Join(parts, ", "))
		}
	}
	if strings.HasPrefix(s, "http") { // requests per TLS connection, keep-alive connections closed by the server
		var loadNotes []string
		for _, n := range names {
			if a := t[n]; a.note != "" {
				loadNotes = append(loadNotes, n+": "+a.note)
			}
		}
		if len(loadNotes) > 0 {
			fmt.Printf("\nloadgen's notes (last run of each target): %s.\n", strings.Join(loadNotes, "; "))
		}
	}
	if len(notes) > 0 {
		fmt.Printf("\nPossible stalls (ops over 0.9 s; kernel counters summed over the windows, machine-wide, so other processes count too): %s.\n", strings.Join(notes, "; "))
	}
}
