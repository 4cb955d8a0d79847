package acme_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"testing"
	"time"

	"github.com/gosmartproxy/smartproxy/acme"
)

// BenchmarkGetCertificate measures the per-handshake cost of the
// Manager as a CertificateStore for a name that has its certificate.
func BenchmarkGetCertificate(b *testing.B) {
	cert := selfSigned(b, time.Hour*24*90, "bench.example")
	m, err := acme.NewManager(acme.Config{
		Storage:   acme.NewFileStorage(b.TempDir()),
		Logger:    slog.New(slog.DiscardHandler),
		Provision: func(context.Context, string) (*tls.Certificate, error) { return cert, nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	defer m.Stop(ctx)
	if err := m.Manage(ctx, []acme.Domain{{Name: "bench.example"}}); err != nil {
		b.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		b.Fatal(err)
	}
	for m.Status()[0].State != acme.StateValid {
		time.Sleep(time.Millisecond)
	}
	hello := &tls.ClientHelloInfo{ServerName: "bench.example"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.GetCertificate(hello); err != nil {
				b.Fatal(err)
			}
		}
	})
}
