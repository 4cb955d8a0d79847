// Package rawsock makes a TCP connection's reads and writes raw system
// calls inside the runtime poller's callbacks (syscall.RawConn), for the
// goroutine paths that cannot move to the event loop (TLS-terminated
// HTTP: crypto/tls needs a blocking net.Conn).
//
// Why: the reads and writes of a non-blocking socket never block, but
// net.TCPConn makes them through entersyscall/exitsyscall. With
// GOMAXPROCS=1 (one core per proxy, as bench/run.sh runs it) the runtime's
// sysmon thread is woken by the first such call after every idle moment
// of the proxy and then polls every 20 µs, and retakes the P from a call
// that spans one of its ticks (a loopback write that runs the receiver's
// TCP stack inline), handing it to another thread: context switches on
// the proxy's one core that an event loop does not pay. internal/evloop
// makes its calls raw for the same reason.
//
// Under -race, syscall.Read and Write also tell the race detector that
// the kernel wrote or read the buffer, and order a write before a later
// read in the same process; raw calls do neither, so a race through the
// bytes of these sockets goes unseen (as for internal/evloop).
package rawsock
