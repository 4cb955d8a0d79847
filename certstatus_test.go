package smartproxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/gosmartproxy/smartproxy/acme"
	"github.com/gosmartproxy/smartproxy/admin"
)

// TestCertificateStatusOneView: the store's certificates (a CertStore in
// Options.Certificates) are reported beside the routes' own, by
// CertificateStatus and by the metrics and admin view; a name two
// certificates carry is one series there, with the earlier expiry, so a
// scrape does not fail on a duplicate.
func TestCertificateStatusOneView(t *testing.T) {
	t.Parallel()
	soon := time.Now().Add(30 * time.Minute).Truncate(time.Second).UTC()
	r := autoRoute("own", "a.example.com")
	r.Action.TLS.Certificate = selfSignedSpec(t, soon, "a.example.com", "*.example.com")
	store := testCertStore(t) // *.example.com, *.test, expiring in an hour
	def := testCert()
	store.SetDefault(&def) // the same names again, Leaf unset
	p, err := New(Options{Routes: []Route{r}, Certificates: store, Logger: testLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Stop(t.Context()) })

	var names []string
	for _, s := range p.CertificateStatus() {
		require.Equal(t, acme.SourceStatic, s.Source)
		names = append(names, s.Name)
	}
	require.Equal(t, []string{"*.example.com", "*.example.com", "*.example.com", "*.test", "*.test", "a.example.com"}, names)

	leaf, err := x509.ParseCertificate(testCert().Certificate[0])
	require.NoError(t, err)
	require.Equal(t, []admin.Certificate{
		{Name: "*.example.com", NotAfter: soon},
		{Name: "*.test", NotAfter: leaf.NotAfter},
		{Name: "a.example.com", NotAfter: soon},
	}, p.certificateStatus())

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(p.Collector()))
	_, err = reg.Gather()
	require.NoError(t, err, "one series per certificate name")
}

// selfSignedSpec is a route certificate for names expiring at notAfter.
func selfSignedSpec(t *testing.T, notAfter time.Time, names ...string) *CertificateSpec {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return &CertificateSpec{
		Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Key:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})),
	}
}
