package connection

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantField string // "" => valid
	}{
		{"zero", Config{}, ""},
		{"standard", Config{KeepAliveTreatment: KeepAliveStandard}, ""},
		{"extended", Config{KeepAliveTreatment: KeepAliveExtended, KeepAliveInactivityMultiplier: 2.5}, ""},
		{"immortal", Config{KeepAliveTreatment: KeepAliveImmortal}, ""},
		{"unknown treatment", Config{KeepAliveTreatment: "forever"}, "KeepAliveTreatment"},
		{"negative multiplier", Config{KeepAliveInactivityMultiplier: -1}, "KeepAliveInactivityMultiplier"},
		{"NaN multiplier", Config{KeepAliveInactivityMultiplier: math.NaN()}, "KeepAliveInactivityMultiplier"},
		{"Inf multiplier", Config{KeepAliveInactivityMultiplier: math.Inf(1)}, "KeepAliveInactivityMultiplier"},
		{"negative limits are unlimited", Config{MaxConnections: -1, MaxConnectionsPerIP: -1,
			ConnectionRateLimitPerMinute: -1, MaxTrackedIPs: -1, MaxLifetime: -1, InactivityTimeout: -1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("Validate() = %v, want error naming %s", err, tt.wantField)
			}
			_, nerr := NewManager(tt.cfg)
			if nerr == nil || errors.Unwrap(nerr) == nil || !strings.Contains(nerr.Error(), tt.wantField) {
				t.Fatalf("NewManager error = %v, want a wrapped error naming %s", nerr, tt.wantField)
			}
		})
	}
}

func TestConfigResolve(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want settings
	}{
		{"TS defaults", Config{}, settings{
			maxConns: 0, maxPerIP: 100, ratePerMin: 300, inactivity: 14400000 * time.Millisecond,
			lifetime: 86400000 * time.Millisecond, maxTracked: 100000, sweepPeriod: time.Second}},
		{"negative means unlimited", Config{MaxConnections: -5, MaxConnectionsPerIP: -1,
			ConnectionRateLimitPerMinute: -1, MaxTrackedIPs: -1, MaxLifetime: -1, InactivityTimeout: -1},
			settings{sweepPeriod: time.Second}},
		{"explicit", Config{MaxConnections: 7, MaxConnectionsPerIP: 3, ConnectionRateLimitPerMinute: 9,
			InactivityTimeout: 100 * time.Millisecond, MaxLifetime: time.Hour, MaxTrackedIPs: 50},
			settings{maxConns: 7, maxPerIP: 3, ratePerMin: 9, inactivity: 100 * time.Millisecond,
				lifetime: time.Hour, maxTracked: 50, sweepPeriod: 25 * time.Millisecond}},
		{"extended default multiplier", Config{KeepAliveTreatment: KeepAliveExtended, InactivityTimeout: time.Minute},
			settings{maxPerIP: 100, ratePerMin: 300, inactivity: 6 * time.Minute, lifetime: 24 * time.Hour,
				maxTracked: 100000, sweepPeriod: time.Second}},
		{"extended multiplier", Config{KeepAliveTreatment: KeepAliveExtended, KeepAliveInactivityMultiplier: 1.5,
			InactivityTimeout: 20 * time.Millisecond, MaxLifetime: -1},
			settings{maxPerIP: 100, ratePerMin: 300, inactivity: 30 * time.Millisecond,
				maxTracked: 100000, sweepPeriod: 10 * time.Millisecond}},
		{"extended overflow means never", Config{KeepAliveTreatment: KeepAliveExtended, KeepAliveInactivityMultiplier: 1e300},
			settings{maxPerIP: 100, ratePerMin: 300, lifetime: 24 * time.Hour, maxTracked: 100000, sweepPeriod: time.Second}},
		{"IPv6 per address", Config{IPv6PrefixLen: 128},
			settings{maxPerIP: 100, ratePerMin: 300, inactivity: 4 * time.Hour, lifetime: 24 * time.Hour, maxTracked: 100000,
				sweepPeriod: time.Second, v6Bits: 128}},
		{"immortal", Config{KeepAliveTreatment: KeepAliveImmortal, InactivityTimeout: time.Millisecond},
			settings{maxPerIP: 100, ratePerMin: 300, lifetime: 24 * time.Hour, maxTracked: 100000, sweepPeriod: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want.v6Bits == 0 {
				tt.want.v6Bits = DefaultIPv6PrefixLen
			}
			if got := tt.cfg.resolve(); got != tt.want {
				t.Fatalf("resolve() =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestSweepInterval(t *testing.T) {
	tests := []struct {
		timeouts []time.Duration
		want     time.Duration
	}{
		{nil, time.Second},
		{[]time.Duration{0, 0}, time.Second},
		{[]time.Duration{4 * time.Hour, 24 * time.Hour}, time.Second},
		{[]time.Duration{100 * time.Millisecond, 0}, 25 * time.Millisecond},
		{[]time.Duration{time.Hour, 200 * time.Millisecond}, 50 * time.Millisecond},
		{[]time.Duration{time.Millisecond}, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := sweepInterval(tt.timeouts...); got != tt.want {
			t.Errorf("sweepInterval(%v) = %v, want %v", tt.timeouts, got, tt.want)
		}
	}
}
