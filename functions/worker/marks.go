package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/store"
)

// redisMarks keeps one key per published terminal result:
//
//	gemq:pub:{<job>}:<task> -> "1", TTL the result TTL
//
// under the job's hash tag, so it sits in the same Cluster slot as the job's
// store keys (and could move into the store's scripts unchanged).
type redisMarks struct {
	rdb redis.Cmdable
	ttl time.Duration
}

var _ publishMarks = (*redisMarks)(nil)

func publishedKey(r store.Ref) string { return "gemq:pub:{" + r.JobID + "}:" + r.TaskID }

// Published reports whether the task's result was published.
func (m *redisMarks) Published(ctx context.Context, r store.Ref) (bool, error) {
	_, err := m.rdb.Get(ctx, publishedKey(r)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("redis get publish mark: %w", err)
	}
	return true, nil
}

// MarkPublished records that the task's result was published.
func (m *redisMarks) MarkPublished(ctx context.Context, r store.Ref) error {
	ttl := m.ttl
	if ttl <= 0 {
		ttl = store.DefaultTTL
	}
	if err := m.rdb.Set(ctx, publishedKey(r), "1", ttl).Err(); err != nil {
		return fmt.Errorf("redis set publish mark: %w", err)
	}
	return nil
}
