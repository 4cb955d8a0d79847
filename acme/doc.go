// Package acme obtains and renews TLS certificates from an ACME
// certificate authority (Let's Encrypt, or any RFC 8555 server) for the
// names a proxy serves, answering HTTP-01 and TLS-ALPN-01 challenges
// through the proxy's own listeners.
//
// The Storage and Locker interfaces hold everything the Manager keeps and
// coordinate processes that share it; FileStorage implements both on a
// local directory. Their contracts are written on the types so that other
// stores (a distributed key-value store, for a fleet of proxies) can be
// written against them.
//
// This package never imports the root smartproxy package.
package acme
