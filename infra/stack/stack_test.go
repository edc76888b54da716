package stack_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gemq-dev/gemq/infra/stack"
)

func TestNoRedisIsAClearError(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no redis-server on PATH
	_, err := stack.Start(context.Background(), stack.Options{
		Getenv: func(string) string { return "" }, Dir: t.TempDir(),
	})
	if !errors.Is(err, stack.ErrNoRedis) || !strings.Contains(err.Error(), "apt-get install -y redis-server") {
		t.Fatalf("Start without Redis: %v", err)
	}
}

func TestUnreachableRedisAddr(t *testing.T) {
	_, err := stack.Start(context.Background(), stack.Options{
		Getenv: func(k string) string { return map[string]string{"REDIS_ADDR": "127.0.0.1:1"}[k] },
		Dir:    t.TempDir(),
	})
	if err == nil || !strings.Contains(err.Error(), "REDIS_ADDR") {
		t.Fatalf("Start with an unreachable REDIS_ADDR: %v", err)
	}
}
