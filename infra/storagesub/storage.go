// Package storagesub stands in for Cloud Storage and for a Pub/Sub Cloud
// Storage subscription on one machine.
//
// Storage is a Cloud Storage JSON API server in this process:
// github.com/fsouza/fake-gcs-server's fakestorage, the most used and
// maintained Cloud Storage emulator (answers in the JSON API's shapes,
// 404 for a missing bucket or object, 412 for a failed precondition,
// listing with prefix and startOffset), reached through the real
// cloud.google.com/go/storage client: set STORAGE_EMULATOR_HOST to
// Storage.Host, as the functions do, or use Storage.Client.
//
// Subscription pulls a pstest (or any Pub/Sub) subscription and writes the
// messages into the bucket the way a Cloud Storage subscription does
// (terraform/pubsub.tf, results_storage): see Config.
package storagesub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"
)

// Storage is a running Cloud Storage stand-in.
type Storage struct {
	// Host is "127.0.0.1:port", the value of STORAGE_EMULATOR_HOST.
	Host string
	srv  *fakestorage.Server
}

// StartStorage starts a stand-in on addr ("127.0.0.1:0" or "" for a free
// port) holding the given (empty) buckets. Stop it with Stop.
func StartStorage(addr string, buckets ...string) (*Storage, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("storage stand-in: address %q: %w", addr, err)
	}
	if port == "0" {
		// fakestorage listens on a port of its choosing when given none.
		port = ""
	}
	// PublicHost without a port: path-style reads (the client's XML API
	// GET /bucket/object) are then served whatever the port.
	opts := fakestorage.Options{Scheme: "http", Host: host, PublicHost: host}
	if port != "" {
		var p int
		if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("storage stand-in: port %q", port)
		}
		opts.Port = uint16(p)
	}
	srv, err := fakestorage.NewServerWithOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("storage stand-in: %w", err)
	}
	u, err := url.Parse(srv.URL())
	if err != nil {
		srv.Stop()
		return nil, fmt.Errorf("storage stand-in: url %q: %w", srv.URL(), err)
	}
	for _, b := range buckets {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	return &Storage{Host: u.Host, srv: srv}, nil
}

// Client returns a real Cloud Storage client for the stand-in, as
// STORAGE_EMULATOR_HOST=Host would make one: no credentials, plain HTTP.
func (s *Storage) Client(ctx context.Context) (*storage.Client, error) {
	c, err := NewClient(ctx, s.Host)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// NewClient returns a real Cloud Storage client for the stand-in at host
// (host:port), without credentials.
func NewClient(ctx context.Context, host string) (*storage.Client, error) {
	if host == "" {
		return nil, errors.New("storage client: no stand-in host")
	}
	c, err := storage.NewClient(ctx, option.WithEndpoint("http://"+host+"/storage/v1/"), option.WithoutAuthentication())
	if err != nil {
		return nil, fmt.Errorf("storage new client: %w", err)
	}
	return c, nil
}

// Stop stops the stand-in; its objects are gone.
func (s *Storage) Stop() {
	if s != nil && s.srv != nil {
		s.srv.Stop()
	}
}
