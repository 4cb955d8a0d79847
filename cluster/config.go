package cluster

import (
	"context"
	"errors"
	"fmt"
)

// ErrNoConfig is returned by Client.Config when nothing was published
// under the prefix.
var ErrNoConfig = errors.New("cluster: no configuration published")

// Document is one version of the configuration document.
type Document struct {
	// Revision is the document's etcd modification revision: the same
	// number on every instance, growing with every publish.
	Revision int64
	// Data is the document as published (JSON text).
	Data []byte
}

// Publish writes the configuration document and returns its revision.
// It does not validate the document (this package does not know the
// schema): validate before publishing, as `smartproxy -publish` does.
// Instances refuse an invalid document, keeping their routes, but a
// newly started instance has nothing to run until a valid one is
// published.
func (c *Client) Publish(ctx context.Context, doc []byte) (int64, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	resp, err := c.etcd.Put(ctx, c.ConfigKey(), string(doc))
	if err != nil {
		return 0, fmt.Errorf("cluster: publish %s: %w", c.ConfigKey(), err)
	}
	return resp.Header.Revision, nil
}

// Config reads the current configuration document; ErrNoConfig when
// none is published.
func (c *Client) Config(ctx context.Context) (Document, error) {
	d, _, err := c.config(ctx)
	return d, err
}

// config is Config that also returns the store's revision at the read,
// from which a watch continues without a gap.
func (c *Client) config(ctx context.Context) (Document, int64, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	resp, err := c.etcd.Get(ctx, c.ConfigKey())
	if err != nil {
		return Document{}, 0, fmt.Errorf("cluster: read %s: %w", c.ConfigKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return Document{}, resp.Header.Revision, ErrNoConfig
	}
	kv := resp.Kvs[0]
	return Document{Revision: kv.ModRevision, Data: kv.Value}, resp.Header.Revision, nil
}
