package smartproxy_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gosmartproxy/smartproxy"
	"github.com/gosmartproxy/smartproxy/acme"
)

// A terminating route without a certificate of its own gets one from
// Let's Encrypt: the proxy answers the challenges on port 80 before the
// redirect route there (which matches every path), and starts ordering
// once its ports are open. (Not run: it needs ports 80 and 443 and the
// CA.)
func ExampleOptions_aCME() {
	m, err := acme.NewManager(acme.Config{
		Settings: acme.Settings{Email: "ops@example.com", UseProduction: true},
		Storage:  acme.NewFileStorage("/var/lib/smartproxy/certs"),
	})
	if err != nil {
		log.Fatal(err)
	}
	site := smartproxy.NewRoute("site").Ports(443).Domains("example.com").
		TLSTerminate(nil). // no certificate: the manager's
		ForwardTo("10.0.0.5:8080").Route()
	redirect := smartproxy.NewRoute("to-https").Ports(80).Domains("example.com").
		Redirect("https://{domain}{path}", 301).Route()
	p, err := smartproxy.New(smartproxy.Options{ACME: m, Routes: []smartproxy.Route{site, redirect}})
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer p.Stop(context.Background())
	for _, st := range p.CertificateStatus() {
		fmt.Println(st.Name, st.State, st.NextAttempt)
	}
}
