package forwarding

// cursor reads big-endian TLS fields from a byte slice. Every accessor checks the length
// first and reports false instead of panicking, so hostile input can only fail the parse.
// It is a value type used through a pointer on the stack, so parsing allocates nothing.
type cursor struct{ b []byte }

func (c *cursor) u8() (uint8, bool) {
	if len(c.b) < 1 {
		return 0, false
	}
	v := c.b[0]
	c.b = c.b[1:]
	return v, true
}

func (c *cursor) u16() (uint16, bool) {
	if len(c.b) < 2 {
		return 0, false
	}
	v := uint16(c.b[0])<<8 | uint16(c.b[1])
	c.b = c.b[2:]
	return v, true
}

func (c *cursor) bytes(n int) ([]byte, bool) {
	if n < 0 || len(c.b) < n {
		return nil, false
	}
	v := c.b[:n:n]
	c.b = c.b[n:]
	return v, true
}

// vec8 reads a vector with a one-byte length prefix.
func (c *cursor) vec8() ([]byte, bool) {
	n, ok := c.u8()
	if !ok {
		return nil, false
	}
	return c.bytes(int(n))
}

// vec16 reads a vector with a two-byte length prefix.
func (c *cursor) vec16() ([]byte, bool) {
	n, ok := c.u16()
	if !ok {
		return nil, false
	}
	return c.bytes(int(n))
}

// isGREASE reports whether v is one of the RFC 8701 reserved values (0x0a0a, 0x1a1a, ...).
func isGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}

// parseHelloBody parses the ClientHello body (after the 4-byte handshake header), following
// RFC 8446 4.1.2, and extracts SNI and the highest offered version.
func parseHelloBody(body []byte) (ClientHelloInfo, error) {
	c := cursor{body}
	legacy, ok := c.u16()
	if !ok {
		return ClientHelloInfo{}, errBadBody
	}
	if legacy>>8 != 3 {
		return ClientHelloInfo{}, errBadLegacyVers
	}
	if _, ok := c.bytes(32); !ok { // random
		return ClientHelloInfo{}, errBadBody
	}
	if sid, ok := c.vec8(); !ok || len(sid) > 32 {
		return ClientHelloInfo{}, errBadBody
	}
	if suites, ok := c.vec16(); !ok || len(suites) < 2 || len(suites)%2 != 0 {
		return ClientHelloInfo{}, errBadBody
	}
	if comp, ok := c.vec8(); !ok || len(comp) < 1 {
		return ClientHelloInfo{}, errBadCompression
	}
	info := ClientHelloInfo{MaxVersion: legacy}
	if len(c.b) == 0 {
		return info, nil // pre-TLS 1.2 style hello without extensions
	}
	exts, ok := c.vec16()
	if !ok {
		return ClientHelloInfo{}, errBadBody
	}
	if len(c.b) != 0 {
		return ClientHelloInfo{}, errTrailingBytes
	}
	if err := parseExtensions(exts, &info); err != nil {
		return ClientHelloInfo{}, err
	}
	return info, nil
}

// parseExtensions walks the extension block, filling info from server_name,
// supported_versions and ALPN. Other extensions are only length-checked.
func parseExtensions(exts []byte, info *ClientHelloInfo) error {
	c := cursor{exts}
	var seenSNI, seenVersions bool
	for len(c.b) > 0 {
		typ, ok := c.u16()
		if !ok {
			return errBadExtension
		}
		data, ok := c.vec16()
		if !ok {
			return errBadExtension
		}
		switch typ {
		case extServerName:
			if seenSNI {
				return errDupExtension
			}
			seenSNI = true
			name, err := parseSNI(data)
			if err != nil {
				return err
			}
			info.ServerName = name
		case extSupportedVersions:
			if seenVersions {
				return errDupExtension
			}
			seenVersions = true
			v, err := parseSupportedVersions(data)
			if err != nil {
				return err
			}
			if v != 0 {
				info.MaxVersion = v
			}
		case extALPN:
			if info.ALPN == nil {
				info.ALPN = data
			}
		}
	}
	return nil
}

// parseSNI returns the first host_name entry of a ServerNameList (RFC 6066 3). Entries of
// other name types are skipped, as crypto/tls does.
func parseSNI(data []byte) ([]byte, error) {
	c := cursor{data}
	list, ok := c.vec16()
	if !ok || len(c.b) != 0 || len(list) == 0 {
		return nil, errBadExtension
	}
	l := cursor{list}
	var host []byte
	for len(l.b) > 0 {
		typ, ok := l.u8()
		if !ok {
			return nil, errBadExtension
		}
		name, ok := l.vec16()
		if !ok || len(name) == 0 {
			return nil, errBadExtension
		}
		if typ == sniHostName && host == nil {
			host = name
		}
	}
	return host, nil
}

// parseSupportedVersions returns the largest non-GREASE version listed, 0 if there is none.
func parseSupportedVersions(data []byte) (uint16, error) {
	c := cursor{data}
	list, ok := c.vec8()
	if !ok || len(c.b) != 0 || len(list) < 2 || len(list)%2 != 0 {
		return 0, errBadExtension
	}
	var best uint16
	for l := (cursor{list}); len(l.b) > 0; {
		v, _ := l.u16() // cannot fail: the length is even
		if !isGREASE(v) && v > best {
			best = v
		}
	}
	return best, nil
}
