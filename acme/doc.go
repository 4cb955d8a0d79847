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
// # Using a Manager
//
// NewManager checks a Config; Manage sets the names (each with the
// global Settings or its own, as a route's action.tls.acme overrides
// them) and loads what Storage holds for them, without touching the
// network. The proxy then
//
//   - puts Manager.HTTPHandler in front of its routes on every port of
//     Manager.HTTPPorts (opening a listener there when no route uses it),
//     so /.well-known/acme-challenge/ wins and user routes keep working;
//   - terminates TLS with Manager.GetCertificate (it is a
//     CertificateStore) and offers the "acme-tls/1" protocol when
//     Manager.TLSALPNEnabled, for TLS-ALPN-01;
//   - calls Manager.Start once those listeners are up, and Manager.Stop
//     when it shuts down.
//
// # Order of events
//
// A certificate in Storage that is still valid is served at once and
// never re-ordered, so a restart keeps its serial. After Start each name
// has one worker goroutine, the only one that orders for it: so a name
// has one order at a time, and handshakes for a name without a
// certificate wait for that order (at most Config.HandshakeWait, or until
// the client gives up), then get the certificate, Config.Fallback, or an
// error (the handshake fails with an alert). A name whose last attempt
// failed does not make handshakes wait.
//
// Around each order the worker takes the Locker's lock for the name and
// reads Storage again, so of several processes sharing a store one
// orders and the others load its certificate.
//
// # Challenges
//
// HTTP-01 is used unless Settings.DisableHTTP01; TLS-ALPN-01 when HTTP-01
// is disabled, and for the next attempt after an HTTP-01 validation
// failed (then the two alternate while both fail), unless
// Settings.DisableTLSALPN. One attempt uses one challenge type: a failed
// authorization cannot be retried with another within the same order.
// Challenge answers live in the memory of the process that orders.
// Wildcard names (DNS-01 only) and IP addresses are refused.
//
// # Failures and retries
//
// A failed attempt (order, validation, Provision without fallback, or a
// store that cannot answer) sets the name's state to "error" and retries
// after an exponential backoff from 1 minute to 6 hours with jitter (half
// to all of each step), and never sooner than a Retry-After or rate
// limit from the CA asks. Single requests are retried three times within
// an attempt (bad nonce, 5xx), a rate limit not at all. A still valid
// certificate keeps being served meanwhile.
//
// # Renewal
//
// Each name is checked every Config.RenewCheckInterval (±10%) and when
// its certificate falls due (less than Settings.RenewBefore left), plus a
// jitter of up to a tenth of the time until then (at most an hour). The
// new certificate is swapped in atomically: connections made before keep
// theirs, new handshakes get the new one. With Config.DisableAutoRenew a
// due certificate is reported (EventExpiring) and kept.
//
// # OCSP
//
// For ACME certificates whose leaf names an OCSP server the worker
// fetches a response, checks it against the issuer, staples it, and
// fetches again halfway between its ThisUpdate and NextUpdate; a stale
// response is never stapled. A "revoked" answer orders a new certificate
// at once. (Let's Encrypt no longer runs OCSP; other CAs do.)
//
// # Custom provisioning
//
// Config.Provision (TS certProvisionFunction) is asked first for every
// name, and again when its certificate falls due. It returns a
// certificate (source "custom", kept in memory only), ErrUseACME to have
// the name ordered, or an error, which falls back to ordering unless
// Config.NoProvisionFallback.
//
// # Storage layout
//
//	accounts/<directory>/<email>/account.key
//	certificates/<directory>/<name>/<name>.pem   (chain, then key)
//
// where <directory> is the directory URL's host and path made key-safe:
// staging and production certificates never mix, and an account is
// reused per directory and email.
//
// This package never imports the root smartproxy package.
package acme
