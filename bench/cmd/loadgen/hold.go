package main

// Several loadgens in step, for maxconns over several proxy processes
// (bench/maxconns-multi.sh): one loadgen holds at most ~19,900 sockets (the
// fd cap), so the harness starts several, each from its own loopback source
// address (one destination address has only ~28,000 ephemeral ports), has
// each report once its connections are open, samples the proxies' memory
// while all of them are held, and then lets them close.

import (
	"flag"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	srcIP   = flag.String("src", "", "idle-rss/maxconns: local IP to dial from (any 127/8 address on loopback)")
	ready   = flag.String("ready", "", "maxconns: once the connections are open, write their count to this file")
	release = flag.String("release", "", "maxconns: then keep them open until this file exists")
)

// dialTimeout dials *addr from -src, when given. The source address is
// bound with IP_BIND_ADDRESS_NO_PORT, so that connect, not bind, picks the
// port: unique per source/destination pair, like an unbound socket's. A
// plain bind would take ports out of the machine's whole ephemeral range
// (ports picked by bind cannot be shared by connect's choice) and, with
// tens of thousands of them in TIME_WAIT, leave every other client on the
// machine without ports for a minute.
func dialTimeout(timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if *srcIP != "" {
		ip := net.ParseIP(*srcIP)
		if ip == nil {
			return nil, fmt.Errorf("-src %q: not an IP address", *srcIP)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return d.Dial("tcp", *addr)
}

// holdOpen reports n open connections through -ready and waits for
// -release (at most an hour, should the harness die without removing us).
func holdOpen(n int) error {
	if *ready == "" {
		return nil
	}
	if err := os.WriteFile(*ready, []byte(fmt.Sprintln(n)), 0o644); err != nil {
		return fmt.Errorf("-ready: %w", err)
	}
	for deadline := time.Now().Add(time.Hour); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(*release); err == nil {
			return nil
		}
	}
	return fmt.Errorf("-release %s: not created within an hour", *release)
}
