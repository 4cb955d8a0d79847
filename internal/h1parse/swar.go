package h1parse

import (
	"encoding/binary"
	"math/bits"
)

// Eight bytes at a time: a field name is mostly letters and '-', a
// value mostly visible ASCII, and a byte-at-a-time loop over them cost
// ~10 instructions a byte. The word tests below mark, exactly, each byte
// of a little-endian word that is not in the class (the top bit of that
// byte set in the mask), so the first marked byte is
// bits.TrailingZeros64(mask)/8. Every test works on bytes with the top
// bit clear (x &^ highs), so no sum carries into the next byte; bytes
// with the top bit set are dealt with on their own.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// load is the little-endian word of b[0:8] (len(b) >= 8).
func load(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// firstMarked is the index of the first byte marked in mask (8: none).
func firstMarked(mask uint64) int { return bits.TrailingZeros64(mask) >> 3 }

// notNameCommon marks the bytes of x that are not ASCII letters, digits
// or '-': the common tchar, which the caller may skip; a marked byte may
// still be a tchar ('_', '.', ...) and is judged by byteClass.
func notNameCommon(x uint64) uint64 {
	x7 := x &^ highs
	t := x7 | 0x20*ones // a letter's lower case
	letter := (t + (0x80-'a')*ones) &^ (t + (0x80-'z'-1)*ones)
	digit := (x7 + (0x80-'0')*ones) &^ (x7 + (0x80-'9'-1)*ones)
	dash := ^((x7 ^ '-'*ones) + 0x7f*ones) // top bit set where the byte is '-'
	return ^(letter|digit|dash)&highs | x&highs
}

// valueCtl marks the bytes of x that are control bytes (under 0x20,
// HTAB among them) or DEL: the bytes that end a value's fast scan (the
// CR of its line end, an HTAB, a refused byte). Bytes 0x80-0xff
// (obs-text) are not marked.
func valueCtl(x uint64) uint64 {
	x7 := x &^ highs
	under := ^(x7 + (0x80-0x20)*ones) // top bit set where x7 < 0x20
	del := ^((x7 ^ 0x7f*ones) + 0x7f*ones)
	return (under | del) & highs &^ x
}

// isContentLength is tokenIs(name, "content-length") in two
// overlapping word compares (bytes 0 to 7 and 6 to 13; |0x20 folds case
// as in tokenIs): every response carries the field, and a byte loop
// over its name cost ~120 instructions.
func isContentLength(name []byte) bool {
	const (
		content = 0x2d746e65746e6f63 // "content-", little-endian
		tLength = 0x6874676e656c2d74 // "t-length"
	)
	return len(name) == 14 && load(name)|0x20*ones == content && load(name[6:])|0x20*ones == tLength
}
