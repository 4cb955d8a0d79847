package smartproxy

import (
	"fmt"
	"strings"

	"github.com/gosmartproxy/smartproxy/connection"
)

// NewConnectionManager returns the connection manager New builds when
// Options.Connections is nil: MaxConnections, MaxConnectionsPerIP,
// ConnectionRateLimitPerMinute, InactivityTimeout, SocketTimeout,
// KeepAliveTreatment, KeepAliveInactivityMultiplier,
// MaxConnectionLifetime and IPv6PrefixLen of opts, with the same defaults
// (100 connections and 300 new ones a minute per client IP, as the TS
// library). Wrap it to observe or add policy, and pass the wrapper as
// Options.Connections of options that leave those fields zero: New
// refuses them next to a manager of your own, which would otherwise
// silently not apply them.
func NewConnectionManager(opts Options) (*connection.Manager, error) {
	m, err := connection.NewManager(opts.connectionConfig())
	if err != nil {
		return nil, fmt.Errorf("smartproxy: %w", err)
	}
	return m, nil
}

// checkOwnManager refuses Options that set connection-manager fields
// next to Options.Connections: the fields configure the default manager
// only, and a user who set both would believe limits applied that never
// were.
func (o *Options) checkOwnManager() error {
	if o.Connections == nil {
		return nil
	}
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"MaxConnections", o.MaxConnections != 0},
		{"MaxConnectionsPerIP", o.MaxConnectionsPerIP != 0},
		{"ConnectionRateLimitPerMinute", o.ConnectionRateLimitPerMinute != 0},
		{"InactivityTimeout", o.InactivityTimeout != 0},
		{"SocketTimeout", o.SocketTimeout != 0},
		{"KeepAliveTreatment", o.KeepAliveTreatment != ""},
		{"KeepAliveInactivityMultiplier", o.KeepAliveInactivityMultiplier != 0},
		{"MaxConnectionLifetime", o.MaxConnectionLifetime != 0},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	if len(set) == 0 {
		return nil
	}
	return fmt.Errorf("%s configure the default connection manager and would be ignored with Options.Connections set: "+
		"build your manager with NewConnectionManager from options that have them, and leave them out of these", strings.Join(set, ", "))
}
