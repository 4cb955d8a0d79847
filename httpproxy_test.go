package smartproxy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBufferPoolPutDoesNotAllocate: the reverse proxy's buffers go back
// to the pool as array pointers, without an allocation per Put, and come
// back out whole.
func TestBufferPoolPutDoesNotAllocate(t *testing.T) {
	// Not parallel: testing.AllocsPerRun counts the allocations of the whole process.
	var bp bufferPool
	buf := bp.Get()
	require.Len(t, buf, 32<<10)
	require.Equal(t, 0.0, testing.AllocsPerRun(100, func() { bp.Put(buf) }))
	bp.Put(make([]byte, 10)) // not one of ours: dropped, no panic
	for range 10 {
		b := bp.Get()
		require.Len(t, b, 32<<10)
		bp.Put(b)
	}
}
