package storagesub

import (
	"context"
	"testing"

	"cloud.google.com/go/storage"
)

// ForTest starts a stand-in holding buckets and returns it with a real
// client for it; both are stopped when tb ends. It fails tb when either
// cannot be made.
func ForTest(tb testing.TB, buckets ...string) (*Storage, *storage.Client) {
	tb.Helper()
	st, err := StartStorage("", buckets...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Stop)
	c, err := st.Client(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return st, c
}
