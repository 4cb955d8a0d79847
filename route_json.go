package smartproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gosmartproxy/smartproxy/schema"
)

// PortRange is an inclusive range of ports; a single port has From == To.
type PortRange struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// PortSpec is the set of ports a route listens on. In JSON it is a number,
// a {from,to} range, or a list mixing both: 443, [80, 443],
// {"from": 8000, "to": 8099}, [80, {"from": 8000, "to": 8099}].
type PortSpec []PortRange

// Ports builds a PortSpec of single ports.
func Ports(ports ...int) PortSpec {
	s := make(PortSpec, 0, len(ports))
	for _, p := range ports {
		s = append(s, PortRange{From: p, To: p})
	}
	return s
}

// PortsRange builds a PortSpec of one inclusive range.
func PortsRange(from, to int) PortSpec { return PortSpec{{From: from, To: to}} }

// Each calls fn for every port in the spec, in order, until fn returns
// false. Ranges are expected to be validated (From <= To, within 1..65535).
func (s PortSpec) Each(fn func(port int) bool) {
	for _, r := range s {
		for p := r.From; p <= r.To; p++ {
			if !fn(p) {
				return
			}
		}
	}
}

// Contains reports whether port is in the spec.
func (s PortSpec) Contains(port int) bool {
	for _, r := range s {
		if port >= r.From && port <= r.To {
			return true
		}
	}
	return false
}

// UnmarshalJSON accepts a number, a {from,to} object or a list of both.
func (s *PortSpec) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return err
		}
		out := make(PortSpec, 0, len(items))
		for i, item := range items {
			r, err := parsePortItem(item)
			if err != nil {
				return fmt.Errorf("ports[%d]: %w", i, err)
			}
			out = append(out, r)
		}
		*s = out
		return nil
	}
	r, err := parsePortItem(data)
	if err != nil {
		return err
	}
	*s = PortSpec{r}
	return nil
}

func parsePortItem(data []byte) (PortRange, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '{' {
		var r struct {
			From *int `json:"from"`
			To   *int `json:"to"`
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return PortRange{}, fmt.Errorf("port range: %w", err)
		}
		if r.From == nil || r.To == nil {
			return PortRange{}, fmt.Errorf("port range needs both \"from\" and \"to\"")
		}
		return PortRange{From: *r.From, To: *r.To}, nil
	}
	var p int
	if err := json.Unmarshal(data, &p); err != nil {
		return PortRange{}, fmt.Errorf("port must be an integer or {from,to}, got %s", data)
	}
	return PortRange{From: p, To: p}, nil
}

// MarshalJSON writes a single port as a number and anything else as a list.
func (s PortSpec) MarshalJSON() ([]byte, error) {
	item := func(r PortRange) any {
		if r.From == r.To {
			return r.From
		}
		return r
	}
	if len(s) == 1 {
		return json.Marshal(item(s[0]))
	}
	items := make([]any, len(s))
	for i, r := range s {
		items[i] = item(r)
	}
	return json.Marshal(items)
}

// StringList is a list of strings that JSON may also give as one string.
// It is an alias of [schema.StringList], which the auth package's schema
// shares, so that a Route literal and a JSON config are written as before.
type StringList = schema.StringList

// UnmarshalJSON accepts a port number or the string "preserve".
func (p *TargetPort) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		if strings.EqualFold(s, "preserve") {
			*p = PreservePort
			return nil
		}
		return fmt.Errorf("port must be a number or \"preserve\", got %q", s)
	}
	var n int
	if err := json.Unmarshal(data, &n); err != nil {
		return fmt.Errorf("port must be a number or \"preserve\", got %s", data)
	}
	*p = TargetPort(n)
	return nil
}

// MarshalJSON writes PreservePort as "preserve".
func (p TargetPort) MarshalJSON() ([]byte, error) {
	if p == PreservePort {
		return []byte(`"preserve"`), nil
	}
	return json.Marshal(int(p))
}

// String returns the port number or "preserve".
func (p TargetPort) String() string {
	if p == PreservePort {
		return "preserve"
	}
	return fmt.Sprint(int(p))
}

// UnmarshalJSON accepts "auto" or an object with cert/key(/ca) or
// certFile/keyFile.
func (c *CertificateSpec) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		if s != "auto" {
			return fmt.Errorf("certificate must be \"auto\" or an object, got %q", s)
		}
		*c = CertificateSpec{Auto: true}
		return nil
	}
	type plain CertificateSpec // no methods: no recursion
	var p plain
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	*c = CertificateSpec(p)
	return nil
}

// MarshalJSON writes "auto" for Auto.
func (c CertificateSpec) MarshalJSON() ([]byte, error) {
	if c.Auto {
		return []byte(`"auto"`), nil
	}
	type plain CertificateSpec
	return json.Marshal(plain(c))
}
