// Package cluster runs a fleet of proxies on etcd: one configuration
// document that every instance watches and applies, and one ACME
// certificate store (an acme.Storage) with an order lock (an
// acme.Locker) that every instance shares, so that each certificate is
// ordered once.
//
// Everything lives under one key prefix (Config.Prefix, for example
// "/smartproxy/prod"):
//
//	<prefix>/config        the proxy configuration: one JSON document, the config file's schema
//	<prefix>/acme/<key>    acme.Storage values (account keys, certificates, their keys)
//	<prefix>/locks/<name>/ acme.Locker mutexes (etcd concurrency.Mutex keys, one per waiter)
//
// The configuration is one document rather than one key per route so
// that a publish is atomic: every instance sees the old route set or the
// new one, never half of a change, and a document's validity (unique
// route names, ports, defaults) is checked as a whole before it is
// written. Its etcd modification revision is the configuration's version
// number (Watcher.Revision), the same on every instance that applied it.
//
// An instance that loses etcd keeps what it has: the routes it applied
// last and the certificates it loaded. Watcher.Connected turns false
// within one probe interval plus the operation timeout, and the watcher
// catches up with the current revision once etcd answers again,
// re-reading the document when the revisions it missed were compacted.
//
// This package does not import the root smartproxy package: the caller
// parses and applies the document (cmd/smartproxy does it with
// smartproxy.ParseConfig and Proxy.UpdateRoutes).
package cluster
