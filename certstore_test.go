package smartproxy

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
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testCA is a throw-away certificate authority (ECDSA P-256) that signs
// leaf certificates for the TLS termination tests.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pem    string
	pool   *x509.CertPool
	serial atomic.Int64
}

func newTestCA(name string) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	ca := &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.serial.Store(100)
	return ca
}

// leafCert is a certificate issued by a testCA, in every form the tests
// need.
type leafCert struct {
	certPEM string // the leaf alone
	keyPEM  string
	tls     *tls.Certificate // leaf only, Leaf filled in
	serial  *big.Int
}

// issue signs a leaf for names; entries that parse as IP addresses become
// IP SANs.
func (ca *testCA) issue(names ...string) *leafCert {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		panic(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return &leafCert{
		certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		tls:     &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		serial:  leaf.SerialNumber,
	}
}

// spec is the leaf as inline PEM with the CA chain appended.
func (l *leafCert) spec(ca *testCA) *CertificateSpec {
	return &CertificateSpec{Cert: l.certPEM, Key: l.keyPEM, CA: ca.pem}
}

// fileSpec writes the leaf's PEM files into dir and names them.
func (l *leafCert) fileSpec(t testing.TB, dir string) *CertificateSpec {
	t.Helper()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(cf, []byte(l.certPEM), 0o600))
	require.NoError(t, os.WriteFile(kf, []byte(l.keyPEM), 0o600))
	return &CertificateSpec{CertFile: cf, KeyFile: kf}
}

// testPKI is the shared set of certificates of the TLS tests.
type testPKI struct {
	ca, otherCA *testCA
	exact       *leafCert // www.example.com
	wildcard    *leafCert // *.example.com
	def         *leafCert // default.test
	route       *leafCert // route.test (a route's own certificate)
	files       *leafCert // files.test (a route's certificate from files)
	backend     *leafCert // backend.internal, original.example.com, 127.0.0.1
}

var pki = sync.OnceValue(func() *testPKI {
	ca := newTestCA("smartproxy test CA")
	return &testPKI{
		ca:       ca,
		otherCA:  newTestCA("some other CA"),
		exact:    ca.issue("www.example.com"),
		wildcard: ca.issue("*.example.com"),
		def:      ca.issue("default.test"),
		route:    ca.issue("route.test"),
		files:    ca.issue("files.test"),
		backend:  ca.issue("backend.internal", "original.example.com", "127.0.0.1"),
	}
})

// newTestStore holds the exact, wildcard and default certificates.
func newTestStore(t testing.TB) *CertStore {
	t.Helper()
	k := pki()
	s := NewCertStore()
	require.NoError(t, s.Add(k.exact.tls))
	require.NoError(t, s.Add(k.wildcard.tls))
	s.SetDefault(k.def.tls)
	return s
}

func hello(name string) *tls.ClientHelloInfo { return &tls.ClientHelloInfo{ServerName: name} }

// requireCertFor checks that the store answers name with the certificate
// whose serial is want's.
func requireCertFor(t *testing.T, s CertificateStore, name string, want *leafCert) {
	t.Helper()
	c, err := s.GetCertificate(hello(name))
	require.NoError(t, err, "name %q", name)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	require.NoError(t, err)
	require.Equal(t, want.serial, leaf.SerialNumber, "name %q got certificate for %v", name, leaf.DNSNames)
}

func TestCertStoreSelection(t *testing.T) {
	t.Parallel()
	k := pki()
	s := newTestStore(t)
	for name, want := range map[string]*leafCert{
		"www.example.com":   k.exact,    // exact wins over the wildcard
		"WWW.Example.COM":   k.exact,    // case-insensitive
		"www.example.com.":  k.exact,    // trailing dot
		"a.example.com":     k.wildcard, // one label under the wildcard
		"A.EXAMPLE.com.":    k.wildcard,
		"a.b.example.com":   k.def, // two labels: not covered
		"example.com":       k.def, // the bare domain: not covered
		"xexample.com":      k.def,
		".example.com":      k.def,
		"default.test":      k.def,
		"unknown.test":      k.def,
		"":                  k.def, // no SNI
		"www.example.com.x": k.def,
	} {
		requireCertFor(t, s, name, want)
	}
}

func TestCertStoreNoCertificate(t *testing.T) {
	t.Parallel()
	var zero CertStore // the zero value is usable
	_, err := zero.GetCertificate(hello("a.example.com"))
	require.ErrorIs(t, err, ErrNoCertificate)
	_, err = zero.GetCertificate(hello(""))
	require.ErrorIs(t, err, ErrNoCertificate)

	k := pki()
	s := NewCertStore()
	require.NoError(t, s.Add(k.wildcard.tls))
	requireCertFor(t, s, "a.example.com", k.wildcard)
	for _, name := range []string{"", "example.com", "a.b.example.com", "other.test"} {
		_, err := s.GetCertificate(hello(name))
		require.ErrorIs(t, err, ErrNoCertificate, "name %q", name)
	}
}

func TestCertStoreAddReplaces(t *testing.T) {
	t.Parallel()
	k := pki()
	s := newTestStore(t)
	renewed := k.ca.issue("www.example.com", "new.example.com")
	require.NoError(t, s.Add(renewed.tls))
	requireCertFor(t, s, "www.example.com", renewed)
	requireCertFor(t, s, "new.example.com", renewed) // exact beats the wildcard
	requireCertFor(t, s, "other.example.com", k.wildcard)

	wild2 := k.ca.issue("*.example.com")
	require.NoError(t, s.Add(wild2.tls))
	requireCertFor(t, s, "other.example.com", wild2)

	def2 := k.ca.issue("default2.test")
	s.SetDefault(def2.tls)
	requireCertFor(t, s, "", def2)
}

// TestCertStoreAddErrors: certificates the store cannot index, and a
// certificate without Leaf, which Add must not write to.
func TestCertStoreAddErrors(t *testing.T) {
	t.Parallel()
	s := NewCertStore()
	require.Error(t, s.Add(nil))
	require.Error(t, s.Add(&tls.Certificate{}))
	require.Error(t, s.Add(&tls.Certificate{Certificate: [][]byte{[]byte("not DER")}}))

	// A certificate without names at all.
	k := pki()
	noName := *k.def.tls
	leaf := *noName.Leaf
	leaf.DNSNames, leaf.Subject.CommonName = nil, ""
	noName.Leaf = &leaf
	require.ErrorContains(t, s.Add(&noName), "no DNS names")

	// CN only (legacy): indexed by the CN.
	cnOnly := k.ca.issue("cn-only.test")
	cnLeaf := *cnOnly.tls.Leaf
	cnLeaf.DNSNames = nil
	cnCert := *cnOnly.tls
	cnCert.Leaf = &cnLeaf
	require.NoError(t, s.Add(&cnCert))
	requireCertFor(t, s, "cn-only.test", cnOnly)

	bare := &tls.Certificate{Certificate: k.exact.tls.Certificate, PrivateKey: k.exact.tls.PrivateKey}
	require.NoError(t, s.Add(bare))
	require.True(t, bare.Leaf == nil, "Add wrote to the caller's certificate")
	requireCertFor(t, s, "www.example.com", k.exact)
}

// TestCertStoreConcurrent: lookups while certificates are added and the
// default changes, for the race detector.
func TestCertStoreConcurrent(t *testing.T) {
	t.Parallel()
	k := pki()
	s := newTestStore(t)
	certs := []*leafCert{k.exact, k.wildcard, k.ca.issue("www.example.com"), k.ca.issue("*.example.com", "x.test")}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 4 {
		wg.Go(func() {
			names := []string{"www.example.com", "a.example.com", "", "x.test", "a.b.example.com"}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := s.GetCertificate(hello(names[(n+i)%len(names)]))
				if err != nil || c == nil || len(c.Certificate) == 0 {
					t.Errorf("GetCertificate: %v", err)
					return
				}
			}
		})
	}
	for i := range 2 {
		wg.Go(func() {
			for n := range 500 {
				if err := s.Add(certs[(n+i)%len(certs)].tls); err != nil {
					t.Errorf("Add: %v", err)
					return
				}
				if n%50 == 0 {
					s.SetDefault(certs[n%len(certs)].tls)
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
}

func TestLoadCertificateInlineWithChain(t *testing.T) {
	t.Parallel()
	k := pki()
	c, err := LoadCertificate(k.route.spec(k.ca))
	require.NoError(t, err)
	require.Len(t, c.Certificate, 2, "leaf then the CA chain")
	require.Equal(t, k.route.tls.Certificate[0], c.Certificate[0])
	require.Equal(t, k.ca.cert.Raw, c.Certificate[1])
	require.NotNil(t, c.Leaf)
	require.Equal(t, []string{"route.test"}, c.Leaf.DNSNames)

	// Without a CA, and with a PEM lacking its final newline before the CA.
	c, err = LoadCertificate(&CertificateSpec{Cert: k.route.certPEM, Key: k.route.keyPEM})
	require.NoError(t, err)
	require.Len(t, c.Certificate, 1)
	c, err = LoadCertificate(&CertificateSpec{Cert: k.route.certPEM[:len(k.route.certPEM)-1], Key: k.route.keyPEM, CA: k.ca.pem})
	require.NoError(t, err)
	require.Len(t, c.Certificate, 2)

	for _, spec := range []*CertificateSpec{nil, {Auto: true}} {
		c, err := LoadCertificate(spec)
		require.NoError(t, err)
		require.Nil(t, c)
	}
}

func TestLoadCertificateFiles(t *testing.T) {
	t.Parallel()
	k := pki()
	spec := k.files.fileSpec(t, t.TempDir())
	c, err := LoadCertificate(spec)
	require.NoError(t, err)
	require.Len(t, c.Certificate, 1)
	require.Equal(t, []string{"files.test"}, c.Leaf.DNSNames)

	spec.CA = k.ca.pem
	c, err = LoadCertificate(spec)
	require.NoError(t, err)
	require.Len(t, c.Certificate, 2)
}

func TestLoadCertificateErrors(t *testing.T) {
	t.Parallel()
	k := pki()
	dir := t.TempDir()
	files := k.files.fileSpec(t, dir)
	other := k.ca.issue("other.test")
	for name, tc := range map[string]struct {
		spec *CertificateSpec
		want string
	}{
		"both forms":       {&CertificateSpec{Cert: k.route.certPEM, Key: k.route.keyPEM, CertFile: files.CertFile, KeyFile: files.KeyFile}, "not both"},
		"cert and keyFile": {&CertificateSpec{Cert: k.route.certPEM, KeyFile: files.KeyFile}, "not both"},
		"empty":            {&CertificateSpec{}, "needs cert and key"},
		"cert only":        {&CertificateSpec{Cert: k.route.certPEM}, "needs cert and key"},
		"key only":         {&CertificateSpec{Key: k.route.keyPEM}, "needs cert and key"},
		"certFile only":    {&CertificateSpec{CertFile: files.CertFile}, "together"},
		"keyFile only":     {&CertificateSpec{KeyFile: files.KeyFile}, "together"},
		"missing certFile": {&CertificateSpec{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: files.KeyFile}, "certFile"},
		"missing keyFile":  {&CertificateSpec{CertFile: files.CertFile, KeyFile: filepath.Join(dir, "nope.pem")}, "keyFile"},
		"bad cert PEM":     {&CertificateSpec{Cert: "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", Key: k.route.keyPEM}, "certificate"},
		"not PEM at all":   {&CertificateSpec{Cert: "hello", Key: "world"}, "PEM"},
		"bad key PEM":      {&CertificateSpec{Cert: k.route.certPEM, Key: "-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n"}, "key"},
		"mismatched key":   {&CertificateSpec{Cert: k.route.certPEM, Key: other.keyPEM}, "private key does not match public key"},
		"key before leaf":  {&CertificateSpec{Cert: k.ca.pem + k.route.certPEM, Key: k.route.keyPEM}, "private key does not match public key"},
		"bad CA PEM":       {&CertificateSpec{Cert: k.route.certPEM, Key: k.route.keyPEM, CA: "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n"}, "chain certificate 1"},
		"CA not PEM":       {&CertificateSpec{Cert: k.route.certPEM, Key: k.route.keyPEM, CA: "garbage"}, "ca: no PEM"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := LoadCertificate(tc.spec)
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, c)
		})
	}
}

// TestCertificateValidation: a bad certificate, TLS version or cipher is a
// route error from New, naming the field.
func TestCertificateValidation(t *testing.T) {
	t.Parallel()
	k := pki()
	missing := filepath.Join(t.TempDir(), "nope")
	for name, tc := range map[string]struct {
		tls  RouteTLS
		want string
	}{
		"mismatched key":       {RouteTLS{Mode: TLSTerminate, Certificate: &CertificateSpec{Cert: k.route.certPEM, Key: k.def.keyPEM}}, "action.tls.certificate"},
		"TLS 1.1":              {RouteTLS{Mode: TLSTerminate, Versions: []string{"TLSv1.1", "TLSv1.2"}}, `action.tls.versions[0]: TLS version "TLSv1.1" is insecure`},
		"insecure suite":       {RouteTLS{Mode: TLSTerminate, Ciphers: "TLS_RSA_WITH_RC4_128_SHA"}, "action.tls.ciphers: cipher suite \"TLS_RSA_WITH_RC4_128_SHA\" is insecure"},
		"unknown suite":        {RouteTLS{Mode: TLSTerminate, Ciphers: "ECDHE-RSA-AES128-GCM-SHA256"}, "unknown cipher suite"},
		"backend CA":           {RouteTLS{Mode: TLSTerminateAndReencrypt, Backend: &BackendTLS{CA: "not a PEM"}}, "action.tls.backend.ca: no PEM certificates"},
		"backend CAFile":       {RouteTLS{Mode: TLSTerminateAndReencrypt, Backend: &BackendTLS{CAFile: missing}}, `action.tls.backend: caFile "` + missing + `": no such file`},
		"backend on terminate": {RouteTLS{Mode: TLSTerminate, Backend: &BackendTLS{}}, "action.tls.backend: only applies"},
	} {
		t.Run(name, func(t *testing.T) {
			r := NewRoute("r").Ports(1).ForwardTo("127.0.0.1:1").Route()
			r.Action.TLS = &tc.tls
			_, err := New(Options{Routes: []Route{r}, Logger: testLogger()})
			require.ErrorContains(t, err, tc.want)
		})
	}

	// Inline CA plus CAFile: both are read.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, []byte(k.otherCA.pem), 0o600))
	pool, _, err := loadCAPool(k.ca.pem[:len(k.ca.pem)-1], caFile)
	require.NoError(t, err)
	for _, ca := range []*testCA{k.ca, k.otherCA} {
		_, err := ca.issue("x.test").tls.Leaf.Verify(x509.VerifyOptions{Roots: pool})
		require.NoError(t, err, "%s must be in the pool", ca.cert.Subject.CommonName)
	}
}
