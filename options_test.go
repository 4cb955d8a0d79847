package smartproxy

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNewRejectsBrokenOptions(t *testing.T) {
	t.Parallel()
	_, err := New(Options{InitialDataTimeout: -time.Second, MaxClientHelloBytes: 512})
	require.ErrorContains(t, err, "InitialDataTimeout must not be negative")
	require.ErrorContains(t, err, "MaxClientHelloBytes must be at least 16384")
}
