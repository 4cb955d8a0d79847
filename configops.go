package smartproxy

// AdminConfig is the config file's "admin" block (our extension, not in
// the TS schema): the admin API of the smartproxy command. The library
// itself starts no admin server; see package admin.
type AdminConfig struct {
	// Listen is the admin API's address, "127.0.0.1:9900" say. Without a
	// Token it must be a loopback address.
	Listen string `json:"listen"`
	// Token, when set, is required as "Authorization: Bearer TOKEN" by
	// every endpoint but /healthz, /readyz and the dashboard page; at
	// least 16 bytes. The command also reads it from the environment
	// variable SMARTPROXY_ADMIN_TOKEN.
	Token string `json:"token,omitempty"`
}

// AccessLogConfig is the config file's "accessLog" block (our
// extension): access logs on the proxy's logger, see AccessLogOptions.
type AccessLogConfig struct {
	Enabled      bool `json:"enabled"`
	SampleEvery  int  `json:"sampleEvery,omitempty"`
	MaxPerSecond int  `json:"maxPerSecond,omitempty"`
	QueueSize    int  `json:"queueSize,omitempty"`
}

func (c *AccessLogConfig) options() *AccessLogOptions {
	if c == nil || !c.Enabled {
		return nil
	}
	return &AccessLogOptions{SampleEvery: c.SampleEvery, MaxPerSecond: c.MaxPerSecond, QueueSize: c.QueueSize}
}
