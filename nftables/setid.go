package nftables

import (
	"sync"

	nft "github.com/google/nftables"
)

// setIDMu serialises Conn.AddSet across every Manager of the process:
// github.com/google/nftables v0.3.0 numbers new sets from a package
// global it increments without synchronisation, so two managers building
// batches at once race on it (found by -race with two managers in one
// test binary).
var setIDMu sync.Mutex

// addSet is c.AddSet under setIDMu.
func addSet(c *nft.Conn, s *nft.Set, elems []nft.SetElement) error {
	setIDMu.Lock()
	defer setIDMu.Unlock()
	return c.AddSet(s, elems)
}
