package limiter

import (
	"testing"

	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func mustParse(t testing.TB, js string) Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startRedis starts one redis-server for the test and returns a client.
func startRedis(t testing.TB) *redis.Client {
	t.Helper()
	return redistest.Start(t).Client(t)
}
