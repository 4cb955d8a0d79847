package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles are the PEM files of a TLS member: the CA that signed the
// member's and the client's certificates, and the client's certificate
// and key (the member requires one).
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

// StartTLS runs one member whose client URL is https and that accepts
// only clients with a certificate signed by its CA.
func StartTLS(t testing.TB) (*Cluster, TLSFiles) {
	t.Helper()
	dir := t.TempDir()
	caKey, ca := newCert(t, nil, nil, "etcdtest CA")
	serverKey, server := newCert(t, caKey, ca, "127.0.0.1")
	clientKey, client := newCert(t, caKey, ca, "client")
	files := TLSFiles{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")}
	writePEM(t, files.CAFile, "CERTIFICATE", ca.Raw)
	writePEM(t, files.CertFile, "CERTIFICATE", client.Raw)
	writeKey(t, files.KeyFile, clientKey)
	serverCert, serverKeyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writePEM(t, serverCert, "CERTIFICATE", server.Raw)
	writeKey(t, serverKeyFile, serverKey)

	pair, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	health := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
	}}
	c := start(t, 1, []string{"--cert-file", serverCert, "--key-file", serverKeyFile,
		"--client-cert-auth", "--trusted-ca-file", files.CAFile}, health)
	return c, files
}

// newCert makes a P-256 certificate: a CA when parent is nil, else one
// for name (an IP address or a client name) signed by parent.
func newCert(t testing.TB, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, name string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	signerKey, signer := parentKey, parent
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		signerKey, signer = key, tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t testing.TB, path string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}
