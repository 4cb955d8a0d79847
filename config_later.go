package smartproxy

import (
	"fmt"
	"slices"
)

// Fields of the TS schema that this version does not implement yet, by
// where they appear, and the capability that will bring them. Refusing
// them beats ignoring them: a user who configured basicAuth must not get
// an open route.
var laterFields = map[string]map[string]string{
	"": {
		"acme":                "ACME certificates",
		"proxyIPs":            "PROXY protocol support",
		"acceptProxyProtocol": "PROXY protocol support",
		"sendProxyProtocol":   "PROXY protocol support",
	},
	"defaults": {"preserveSourceIP": "the nftables engine"},
	"action": {
		"forwardingEngine":  "the nftables engine",
		"nftables":          "the nftables engine",
		"sendProxyProtocol": "PROXY protocol support",
	},
	"tls": {"acme": "ACME certificates"},
	"security": {
		"authentication": "a later version; use basicAuth or jwtAuth",
	},
}

// checkUnsupported walks a generic config document and refuses the first
// field of laterFields it finds, naming where it is.
func checkUnsupported(top map[string]any) error {
	if err := refuseLater("", "", top); err != nil {
		return err
	}
	if d, ok := top["defaults"].(map[string]any); ok {
		if err := refuseLater("defaults", "defaults.", d); err != nil {
			return err
		}
		if s, ok := d["security"].(map[string]any); ok {
			if err := refuseLater("security", "defaults.security.", s); err != nil {
				return err
			}
		}
	}
	routes, _ := top["routes"].([]any)
	for i, raw := range routes {
		r, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		at := fmt.Sprintf("routes[%d]%s.", i, nameOf(raw))
		if err := checkRouteLater(at, r); err != nil {
			return err
		}
	}
	return nil
}

func checkRouteLater(at string, r map[string]any) error {
	if m, ok := r["match"].(map[string]any); ok {
		if err := refuseLater("match", at+"match.", m); err != nil {
			return err
		}
	}
	if s, ok := r["security"].(map[string]any); ok {
		if err := refuseLater("security", at+"security.", s); err != nil {
			return err
		}
	}
	a, ok := r["action"].(map[string]any)
	if !ok {
		return nil
	}
	if err := refuseLater("action", at+"action.", a); err != nil {
		return err
	}
	if t, ok := a["tls"].(map[string]any); ok {
		if err := refuseLater("tls", at+"action.tls.", t); err != nil {
			return err
		}
	}
	targets, _ := a["targets"].([]any)
	for j, raw := range targets {
		if t, ok := raw.(map[string]any); ok {
			if err := refuseLater("target", fmt.Sprintf("%saction.targets[%d].", at, j), t); err != nil {
				return err
			}
		}
	}
	return nil
}

func refuseLater(kind, at string, obj map[string]any) error {
	later := laterFields[kind]
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if what, ok := later[k]; ok {
			return fmt.Errorf("%s%s: not supported yet (arrives with %s)", at, k, what)
		}
	}
	return nil
}
