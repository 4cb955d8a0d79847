package smartproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for tls.Config.Time.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// longLivedCert is a self-signed certificate for name valid for 30 days:
// long enough for a client whose clock is a week ahead (Go clients drop a
// cached session whose certificate has expired).
func longLivedCert(t *testing.T, name string) *CertificateSpec {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return &CertificateSpec{
		Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Key:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
	}
}

// TestTicketHonouredForItsHintedLifetime: a session ticket resumes for the
// whole lifetime crypto/tls hints to TLS 1.3 clients (7 days), through
// every key rotation of those 7 days, in the worst case of a rotation
// right after the ticket was issued. With three keys kept (one rotation
// a day) the key was dropped after 2 to 3 days while clients were told 7.
// The last step shows the hint really is 7 days: a client whose clock is
// past it no longer offers the ticket.
func TestTicketHonouredForItsHintedLifetime(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	port := lp.port(t)
	p := newTestProxy(t, lp, Options{Routes: []Route{
		terminateRoute("one", port, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: longLivedCert(t, "route.test")}, "route.test"),
	}})
	var serverClock fakeClock
	p.tlsBase.Time = serverClock.now // before Start: route configs clone the base on first use
	require.NoError(t, p.Start(context.Background()))

	const almost = ticketLifetime - time.Minute
	for _, ver := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(ver), func(t *testing.T) {
			var clientClock fakeClock
			cfg := &tls.Config{ServerName: "route.test", MaxVersion: ver, Time: clientClock.now,
				ClientSessionCache: tls.NewLRUClientSessionCache(8),
				InsecureSkipVerify: true, // self-signed; what is tested is the ticket
			}
			require.False(t, terminated(t, port, cfg).DidResume, "first connection is a full handshake")

			require.NoError(t, p.rotateTicketKeys()) // worst case: a rotation right after the ticket
			for elapsed := ticketKeyRotation; elapsed < almost; elapsed += ticketKeyRotation {
				require.NoError(t, p.rotateTicketKeys())
			}
			serverClock.advance(almost)
			clientClock.advance(almost)
			t.Cleanup(func() { serverClock.advance(-almost) })
			require.True(t, terminated(t, port, cfg).DidResume, "a ticket %v old, after the rotations of that time, resumes", almost)

			if ver == tls.VersionTLS13 {
				// Beyond the hint the client drops the ticket itself (TLS 1.2
				// tickets carry no hint: Go's server enforces 7 days).
				fresh := cfg.Clone()
				fresh.ClientSessionCache = tls.NewLRUClientSessionCache(8)
				var later fakeClock
				later.advance(almost)
				fresh.Time = later.now
				require.False(t, terminated(t, port, fresh).DidResume, "a new client: full handshake")
				later.advance(ticketLifetime + time.Minute) // past the hint of the ticket just issued; the server's clock stays
				require.False(t, terminated(t, port, fresh).DidResume, "the hint is 7 days: past it the client no longer offers the ticket")
			}
		})
	}
	requireNoRecords(t, p)
}

// TestTLS12DefaultSuitesAreAEAD: a terminating route without "ciphers"
// refuses a TLS 1.2 client that offers only CBC suites (LUCKY13-prone)
// and accepts AES-GCM and ChaCha20-Poly1305; "ciphers" can widen the list
// to CBC again.
func TestTLS12DefaultSuitesAreAEAD(t *testing.T) {
	t.Parallel()
	k := pki()
	be := startBackend(t, "127.0.0.1:0", reporter)
	lp := newListenerPool(t)
	def, wide := lp.port(t), lp.port(t)
	p := startTestProxy(t, lp, Options{Routes: []Route{
		terminateRoute("default", def, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca)}),
		terminateRoute("wide", wide, be.addr(), RouteTLS{Mode: TLSTerminate, Certificate: k.route.spec(k.ca),
			Ciphers: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:" +
				"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA:TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"}),
	}})
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	}
	client := func(suites ...uint16) *tls.Config {
		c := caClient("route.test")
		c.MaxVersion, c.CipherSuites = tls.VersionTLS12, suites
		return c
	}

	_, err := tlsDial(t, def, client(cbc...))
	require.ErrorContains(t, err, "handshake failure", "CBC-only client on the default list")
	for _, aead := range [][]uint16{
		{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384},
		{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
	} {
		st := terminated(t, def, client(aead...))
		require.Contains(t, aead, st.CipherSuite)
	}
	// A client offering both gets an AEAD suite.
	st := terminated(t, def, client(append(cbc, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)...))
	require.NotContains(t, cbc, st.CipherSuite)

	st = terminated(t, wide, client(cbc...))
	require.Contains(t, cbc, st.CipherSuite, "the ciphers option widens the list")
	require.EqualValues(t, tls.VersionTLS13, terminated(t, def, caClient("route.test")).Version)
	requireNoRecords(t, p)
}
