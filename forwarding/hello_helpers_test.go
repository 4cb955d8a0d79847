package forwarding

import "crypto/tls"

func tls13Config() *tls.Config {
	return &tls.Config{ServerName: "Example.COM", InsecureSkipVerify: true}
}

func tls12Config() *tls.Config {
	return &tls.Config{ServerName: "backend.test", MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true}
}
