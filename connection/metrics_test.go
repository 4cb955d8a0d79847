package connection

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestThroughputWindows feeds a known per-second byte pattern through the
// sampler: second k moves 1000*k bytes in and 10 bytes out.
func TestThroughputWindows(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{Now: clk.Now})
	r := mustOpen(t, m, v4(1))

	if in, _ := m.sampler.rates(); in != (Rates{}) {
		t.Fatalf("rates before any sample = %+v, want zero", in)
	}
	tick := func(k int) {
		r.AddIn(1000 * k)
		r.AddOut(10)
		clk.Advance(time.Second)
		m.sample()
	}
	for k := 1; k <= 3; k++ {
		tick(k)
	}
	// Early: averages over the 3 samples that exist.
	th := m.Snapshot().Throughput
	if want := (Rates{3000, 2000, 2000}); th.In != want {
		t.Errorf("after 3s: In = %+v, want %+v", th.In, want)
	}
	for k := 4; k <= 70; k++ {
		tick(k)
	}
	th = m.Snapshot().Throughput
	// last 10 = 61..70 => mean 65.5k; last 60 = 11..70 => mean 40.5k.
	if want := (Rates{70000, 65500, 40500}); th.In != want {
		t.Errorf("In = %+v, want %+v", th.In, want)
	}
	if want := (Rates{10, 10, 10}); th.Out != want {
		t.Errorf("Out = %+v, want %+v", th.Out, want)
	}
	// A late tick (2s gap) halves the rate rather than doubling a second.
	r.AddIn(4000)
	clk.Advance(2 * time.Second)
	m.sample()
	if got := m.Snapshot().Throughput.In.Last1s; got != 2000 {
		t.Errorf("Last1s over a 2s gap = %v, want 2000", got)
	}
	m.Close(r)
}

func TestSnapshot(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, Config{MaxConnections: 100, MaxConnectionsPerIP: 20, Now: clk.Now})
	// IP i (1..12) opens i connections; ties resolved by IP string.
	var recs []*Record
	for i := 1; i <= 12; i++ {
		for range i {
			r := mustOpen(t, m, v4(i))
			route := "even"
			if i%2 == 1 {
				route = "odd"
			}
			if err := m.AssignRoute(r, route, fmt.Sprintf("d%d.example", i), 0); err != nil {
				t.Fatal(err)
			}
			r.AddIn(i)
			r.AddOut(2 * i)
			recs = append(recs, r)
		}
	}
	// .11 now ties .12 at 12 connections; the tie goes to the smaller string.
	recs = append(recs, mustOpen(t, m, v4(11)))
	m.CloseAll()

	s := m.Snapshot()
	wantTop := []IPCount{
		{"127.0.0.11", 12}, {"127.0.0.12", 12}, {"127.0.0.10", 10}, {"127.0.0.9", 9},
		{"127.0.0.8", 8}, {"127.0.0.7", 7}, {"127.0.0.6", 6}, {"127.0.0.5", 5},
		{"127.0.0.4", 4}, {"127.0.0.3", 3},
	}
	if !reflect.DeepEqual(s.TopIPs, wantTop) {
		t.Errorf("TopIPs = %v\nwant     %v", s.TopIPs, wantTop)
	}
	total := 78 + 1
	if s.Active != total || s.Total != uint64(total) || len(s.ByIP) != 12 || s.ByIP["127.0.0.1"] != 1 {
		t.Errorf("Active=%d Total=%d len(ByIP)=%d ByIP[.1]=%d", s.Active, s.Total, len(s.ByIP), s.ByIP["127.0.0.1"])
	}
	// odd IPs 1+3+5+7+9+11 = 36, even 2+..+12 = 42
	if want := map[string]int{"odd": 36, "even": 42}; !reflect.DeepEqual(s.ByRoute, want) {
		t.Errorf("ByRoute = %v, want %v", s.ByRoute, want)
	}
	var wantIn uint64
	for i := 1; i <= 12; i++ {
		wantIn += uint64(i * i)
	}
	if s.BytesIn != wantIn || s.BytesOut != 2*wantIn {
		t.Errorf("Bytes in/out = %d/%d, want %d/%d", s.BytesIn, s.BytesOut, wantIn, 2*wantIn)
	}
	if s.Closed[ReasonShutdown] != uint64(total) || len(s.Rejected) != 0 {
		t.Errorf("Closed=%v Rejected=%v", s.Closed, s.Rejected)
	}

	infos := m.Records()
	if len(infos) != total {
		t.Fatalf("Records len %d", len(infos))
	}
	for i := 1; i < len(infos); i++ {
		if infos[i-1].ID >= infos[i].ID {
			t.Fatalf("Records not sorted by increasing ID at %d", i)
		}
	}
	first := infos[0]
	want := RecordInfo{ID: first.ID, Client: ap(v4(1), 40000), LocalPort: 443, Route: "odd",
		Domain: "d1.example", Start: clk.Now(), LastActivity: clk.Now(), BytesIn: 1, BytesOut: 2}
	if first != want {
		t.Errorf("Records()[0] = %+v\nwant %+v", first, want)
	}
	for _, r := range recs {
		m.Close(r)
	}
	checkZero(t, m)
	if recs[0].Info() != first || recs[0].ID() != first.ID || recs[0].LocalPort() != 443 || !recs[0].Start().Equal(clk.Now()) {
		t.Errorf("Record getters disagree with Records()")
	}
}
