// Package forwarding is the data plane of the proxy: it recognises a TLS ClientHello
// without terminating TLS (ParseClientHello, SniffClientHello over a replaying PeekConn) and
// copies bytes between a client and a backend connection (Pipe).
//
// Pipe is built for many mostly idle connections: between TCP sockets on Linux it splices
// through kernel pipes taken from a small bounded free list only while data flows, so an
// idle proxied connection holds neither a pipe (two file descriptors) nor a user-space
// buffer, only its goroutines; with an IdleParker (PipeOptions.Parker) not even those: an
// idle direction parks its socket in the parker's epoll set and its goroutine ends until
// data comes. A destination that stops taking bytes (or takes a few a second) ends the pipe
// after PipeOptions.WriteTimeout without write progress. StartPipe runs a pipe without holding the caller's goroutine. The ClientHello parser allocates nothing for the common
// single-record hello and bounds-checks every length, since its input is attacker-controlled.
package forwarding
