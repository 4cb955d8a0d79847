package smartproxy

import (
	"github.com/gosmartproxy/smartproxy/schema"
)

// Config's data-path keys, our extensions to the TS schema:
//
//	engine        "goroutines" or "eventloop" (Options.Engine); absent: the default
//	httpFastPath  false: HTTP/1.1 on net/http's server (Options.DisableHTTPFastPath);
//	              absent or true: the fast path, the default
//	reusePort     true: SO_REUSEPORT listening sockets (Options.ReusePort)

// engineNames are the values of the config key engine.
var engineNames = map[string]Engine{"goroutines": EngineGoroutines, "eventloop": EngineEventLoop}

// dataPathOptions copies the data-path keys into o (checkDataPath has
// refused unknown values).
func (c *Config) dataPathOptions(o *Options) {
	if e, ok := engineNames[c.Engine]; ok {
		o.Engine = e
	}
	if c.HTTPFastPath != nil {
		o.DisableHTTPFastPath = !*c.HTTPFastPath
	}
	o.ReusePort = c.ReusePort
}

// checkDataPath reports an unknown engine under its JSON path.
func (c *Config) checkDataPath(fe *schema.Collector) {
	if _, ok := engineNames[c.Engine]; c.Engine != "" && !ok {
		fe.Failf("engine", "want \"goroutines\" or \"eventloop\", got %q", c.Engine)
	}
}
