//go:build !linux

package forwarding

func spliceCount() int64 { return 0 }
