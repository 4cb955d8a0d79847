package cluster

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gosmartproxy/smartproxy/acme"
)

// Storage is an acme.Storage on etcd: each key is one etcd key under
// <prefix>/acme/. A Store is one etcd Put, so it is atomic and, once it
// returns, committed by a quorum of members (durable, and read by every
// instance: reads are linearizable).
//
// Values are limited by etcd's request size (1.5 MiB by default), far
// above what a certificate chain or a key takes. etcd keeps values
// unencrypted on its members' disks and serves them to every client
// allowed to read the prefix: protect the prefix with etcd's
// authentication (TLS client certificates and a role limited to the
// prefix), as private keys are stored here.
type Storage struct{ c *Client }

var _ acme.Storage = (*Storage)(nil)

// Storage returns the fleet's ACME store.
func (c *Client) Storage() *Storage { return &Storage{c: c} }

func (s *Storage) key(k string) string { return s.c.prefix + "/acme/" + k }

// Load returns the value of key, or an error wrapping acme.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := checkName("key", key); err != nil {
		return nil, err
	}
	ctx, cancel := s.c.opContext(ctx)
	defer cancel()
	resp, err := s.c.etcd.Get(ctx, s.key(key))
	if err != nil {
		return nil, fmt.Errorf("cluster: load %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("cluster: load %s: %w", key, acme.ErrNotExist)
	}
	return resp.Kvs[0].Value, nil
}

// Store sets key to value.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if err := checkName("key", key); err != nil {
		return err
	}
	ctx, cancel := s.c.opContext(ctx)
	defer cancel()
	if _, err := s.c.etcd.Put(ctx, s.key(key), string(value)); err != nil {
		return fmt.Errorf("cluster: store %s: %w", key, err)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if err := checkName("key", key); err != nil {
		return err
	}
	ctx, cancel := s.c.opContext(ctx)
	defer cancel()
	if _, err := s.c.etcd.Delete(ctx, s.key(key)); err != nil {
		return fmt.Errorf("cluster: delete %s: %w", key, err)
	}
	return nil
}

// List returns the stored keys that start with prefix ("" lists all).
func (s *Storage) List(ctx context.Context, prefix string) ([]string, error) {
	ctx, cancel := s.c.opContext(ctx)
	defer cancel()
	base := s.key("")
	resp, err := s.c.etcd.Get(ctx, base+prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("cluster: list %q: %w", prefix, err)
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys = append(keys, strings.TrimPrefix(string(kv.Key), base))
	}
	return keys, nil
}

// checkName enforces acme's key alphabet: slash-separated non-empty
// segments of [A-Za-z0-9._@+-], never "." or "..". etcd would store any
// bytes, but a key another store (the file store) could not hold would
// make the two disagree.
func checkName(what, name string) error {
	if name == "" {
		return fmt.Errorf("cluster: empty %s", what)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("cluster: %s %q: empty, \".\" or \"..\" segment", what, name)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@+-", r)) {
				return fmt.Errorf("cluster: %s %q: character %q not allowed (want [A-Za-z0-9._@+-] and /)", what, name, r)
			}
		}
	}
	return nil
}
