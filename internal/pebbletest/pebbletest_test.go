package pebbletest_test

import (
	"crypto"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/gosmartproxy/smartproxy/internal/pebbletest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStart(t *testing.T) {
	t.Parallel()
	s := pebbletest.Start(t, pebbletest.Options{})
	resp, err := s.Client.Get(s.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("directory: %d %v", resp.StatusCode, err)
	}
	if _, ok := dir["newOrder"]; !ok {
		t.Fatalf("directory without newOrder: %v", dir)
	}
	if s.Roots(t) == nil || s.Intermediate(t) == nil {
		t.Fatal("management API")
	}
	if n := s.Orders(); n != 0 {
		t.Fatalf("orders = %d before any order", n)
	}
}

func TestIntermediateKey(t *testing.T) {
	t.Parallel()
	s := pebbletest.Start(t, pebbletest.Options{OCSPResponderURL: "http://127.0.0.1:1/"})
	key, ca := s.IntermediateKey(t), s.Intermediate(t)
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(ca.PublicKey) {
		t.Fatal("intermediate key does not match the intermediate certificate")
	}
}
