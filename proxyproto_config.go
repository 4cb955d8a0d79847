package smartproxy

import (
	"fmt"

	"github.com/gosmartproxy/smartproxy/iplist"
	"github.com/gosmartproxy/smartproxy/schema"
)

// proxyProtocolOptions copies the file's PROXY protocol settings.
func (c *Config) proxyProtocolOptions(o *Options) {
	o.AcceptProxyProtocol = c.AcceptProxyProtocol
	o.ProxyIPs = c.ProxyIPs
	o.ProxyProtocol = c.ProxyProtocol
	o.SendProxyProtocol = c.SendProxyProtocol
	if c.ProxyHeaderTimeout != nil {
		o.ProxyHeaderTimeout = c.ProxyHeaderTimeout.Duration()
	}
}

// checkProxyProtocol reports the PROXY protocol mistakes of a config file
// under their JSON paths (Options.validate says the same of Options).
func (c *Config) checkProxyProtocol(fe *schema.Collector) {
	for i, p := range c.ProxyIPs {
		if _, err := iplist.Parse([]string{p}); err != nil {
			fe.Fail(fmt.Sprintf("proxyIPs[%d]", i), err)
		}
	}
	receiving := c.AcceptProxyProtocol || len(c.ProxyIPs) > 0
	if c.AcceptProxyProtocol && len(c.ProxyIPs) == 0 {
		fe.Failf("acceptProxyProtocol", "needs proxyIPs, the trusted senders: an untrusted client must never choose its own address")
	}
	switch c.ProxyProtocol {
	case "", ProxyProtocolRequired:
	case ProxyProtocolOptional:
		if !receiving {
			fe.Failf("proxyProtocol", "\"optional\" needs acceptProxyProtocol and proxyIPs")
		}
	default:
		fe.Failf("proxyProtocol", "must be %q or %q, got %q", ProxyProtocolRequired, ProxyProtocolOptional, c.ProxyProtocol)
	}
}
