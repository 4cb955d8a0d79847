package smartproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/gobwas/glob"
)

// The syntax checks of host names, domain patterns and target hosts that
// route validation applies, kept apart from the route walk in validate.go.

// normalizeDomain lower-cases a name and drops one trailing dot.
func normalizeDomain(d string) string {
	if isNormalDomain(d) {
		return d // the usual Host: one pass, where the three below make three
	}
	d = strings.TrimSpace(d)
	d = strings.TrimSuffix(d, ".")
	return strings.ToLower(d)
}

// isNormalDomain reports a d that normalizeDomain returns unchanged: no upper-case letter,
// no space or control byte, and no trailing dot.
func isNormalDomain(d string) bool {
	if d == "" || d[len(d)-1] == '.' {
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c <= ' ' || 'A' <= c && c <= 'Z' || c >= 0x80 {
			return false
		}
	}
	return true
}

// globMeta are the characters that make a pattern a glob (gobwas/glob
// syntax: *, ?, [class] and {alternatives}).
const globMeta = "*?[{"

// compileGlob compiles s when it contains glob syntax and returns nil for
// a literal, which callers compare as a plain string (faster, and no
// surprises from characters such as '[' in a literal).
func compileGlob(s string) (*glob.Pattern, error) {
	if !strings.ContainsAny(s, globMeta) {
		return nil, nil
	}
	return glob.Compile(s)
}

// checkHostSyntax accepts a target host: an IP address (IPv6 without
// brackets, as net.JoinHostPort adds them) or a DNS name (letters,
// digits, '-' and '_', labels of 1 to 63 characters, at most 253 in all,
// one trailing dot allowed). A port belongs in the target's port field.
func checkHostSyntax(h string) error {
	if h == "" {
		return errors.New("empty")
	}
	if err := checkPrintable(h); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if strings.HasPrefix(h, "[") {
		if inner, ok := strings.CutSuffix(h[1:], "]"); ok {
			if _, err := netip.ParseAddr(inner); err == nil {
				return fmt.Errorf("write the IPv6 address without brackets (%q)", inner)
			}
		}
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		return fmt.Errorf("a host must not carry a port: put %q in host and %s in port", host, port)
	}
	return checkDNSName(h)
}

// checkDNSName checks the syntax of a host name (RFC 1123, plus '_',
// which container and service names use).
func checkDNSName(h string) error {
	name := strings.TrimSuffix(h, ".")
	if len(name) > 253 {
		return fmt.Errorf("longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		switch {
		case l == "":
			return errors.New("empty label")
		case len(l) > 63:
			return fmt.Errorf("label %q is longer than 63 characters", l)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Errorf("label %q starts or ends with '-'", l)
		}
		for _, c := range []byte(l) {
			if !isHostChar(c) {
				return fmt.Errorf("character %q is not allowed in a host name", c)
			}
		}
	}
	// "1.2.3.256" is no name: a resolver would be asked for it.
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return errors.New("not a valid IP address, and a host name cannot end in a numeric label")
	}
	return nil
}

func isHostChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// checkDomainSyntax accepts a normalised match.domains entry: host name
// characters, the glob syntax ('*', '?', [classes], {alternatives}) and
// ':' for IPv6 literals in Host headers. Anything else could never match
// a server name, which is ASCII (IDNs travel as "xn--" A-labels).
func checkDomainSyntax(d string) error {
	if err := checkPrintable(d); err != nil {
		return err
	}
	for _, c := range []byte(d) {
		if !isHostChar(c) && !strings.ContainsRune(".:*?[]{},!^", rune(c)) {
			return fmt.Errorf("character %q cannot appear in a server name", c)
		}
	}
	return nil
}

// checkPrintable refuses control characters, spaces and non-ASCII.
func checkPrintable(s string) error {
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			return fmt.Errorf("contains the control character %U", r)
		case r == ' ':
			return errors.New("contains a space")
		case r > 0x7e:
			return fmt.Errorf("contains the non-ASCII character %q (write internationalised names in their xn-- form)", r)
		}
	}
	return nil
}
