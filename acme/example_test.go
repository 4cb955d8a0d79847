package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
)

// A Manager serving certificates for two names: one from the user's own
// Provision hook, the other ordered from Let's Encrypt staging once
// Start is called (not here: this example stays offline). The proxy
// puts m.HTTPHandler in front of its routes on each of m.HTTPPorts, uses
// m.GetCertificate on its terminating listeners (offering "acme-tls/1"
// when m.TLSALPNEnabled), and calls Start once those listeners are up.
func Example() {
	dir, _ := os.MkdirTemp("", "acme-example")
	defer os.RemoveAll(dir)
	m, err := acme.NewManager(acme.Config{
		Settings: acme.Settings{Email: "ops@example.com", RenewBefore: 30 * 24 * time.Hour},
		Storage:  acme.NewFileStorage(dir),
		Provision: func(ctx context.Context, name string) (*tls.Certificate, error) {
			if name == "internal.example" {
				return internalCert(name), nil
			}
			return nil, acme.ErrUseACME
		},
		OnEvent:       func(ev acme.Event) { fmt.Println("event:", ev.Kind, ev.Name) },
		HandshakeWait: time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	err = m.Manage(ctx, []acme.Domain{
		{Name: "internal.example"},
		{Name: "www.example.com", Settings: &acme.Settings{UseProduction: true, HTTPPort: 80}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("HTTP-01 ports:", m.HTTPPorts(), "TLS-ALPN-01:", m.TLSALPNEnabled())
	_ = http.Handler(m.HTTPHandler(nil))
	for _, st := range m.Status() {
		fmt.Println(st.Name, st.State)
	}
	_ = m.Stop(ctx)
	// Output:
	// HTTP-01 ports: [80] TLS-ALPN-01: true
	// internal.example pending
	// www.example.com pending
}

// internalCert stands for a certificate from the user's own CA.
func internalCert(name string) *tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
