//go:build linux

package nftables

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Status reads the rules and counters of every route from the kernel.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return Status{}, nil
	}
	if err := ctx.Err(); err != nil {
		return Status{}, err
	}
	c, err := dial(m.netns)
	if err != nil {
		return Status{}, classify(err)
	}
	t := m.table()
	st := Status{Table: m.name, Warnings: slices.Clone(m.warns)}
	for name, in := range m.routes {
		// The snat and fwd chains hold one rule each (one when masquerading)
		// that this library cannot read back (see addRoute).
		rs := RouteStatus{Name: name, Rules: 1}
		if !in.route.PreserveSourceIP {
			rs.Rules++
		}
		for _, ch := range []string{in.names.nat(), in.names.count()} {
			rules, err := c.GetRules(t, &nft.Chain{Name: ch, Table: t})
			if err != nil {
				return Status{}, fmt.Errorf("nftables: listing chain %s: %w", ch, classify(err))
			}
			rs.Rules += len(rules)
			for _, r := range rules {
				cnt := ruleCounter(r)
				if cnt == nil {
					continue
				}
				switch role := roleOf(r.UserData); role {
				case "dnat":
					rs.Connections += cnt.Packets
				case "traffic":
					rs.Packets += cnt.Packets
					rs.Bytes += cnt.Bytes
				case "block", "allow", "rate":
					rs.Dropped += cnt.Packets
				}
			}
		}
		st.Routes = append(st.Routes, rs)
	}
	slices.SortFunc(st.Routes, func(a, b RouteStatus) int { return strings.Compare(a.Name, b.Name) })
	return st, nil
}

func ruleCounter(r *nft.Rule) *expr.Counter {
	for _, e := range r.Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c
		}
	}
	return nil
}

// roleOf returns the role part of a ruleTag.
func roleOf(tag []byte) string {
	if i := bytes.LastIndexByte(tag, ':'); i >= 0 {
		return string(tag[i+1:])
	}
	return ""
}
