package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// leadKey holds the claim lead the worker fleet learned from Cloud Tasks'
// dispatch lag (internal/lifecycle's leadTracker), in milliseconds, so an
// instance that has not seen enough dispatches itself starts from it. Its
// loss costs only function time: instances fall back to the configured
// claim lead until they learn again.
const leadKey = "gemq:fleet:dispatch-lead"

// leadTTL bounds how long a learned lead outlives the traffic that taught
// it: after a quiet day the fleet starts conservative again.
const leadTTL = 24 * time.Hour

var (
	saveLeadScript = redis.NewScript(`redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1`)
	getLeadScript  = redis.NewScript(`return redis.call('GET', KEYS[1])`)
)

// SaveDispatchLead records the claim lead an instance learned.
func (s *Store) SaveDispatchLead(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return errors.New("store: save dispatch lead: not positive")
	}
	if err := saveLeadScript.Run(ctx, s.rdb, []string{leadKey}, d.Milliseconds(), leadTTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("store: save dispatch lead: %w", err)
	}
	return nil
}

// DispatchLead returns the claim lead last saved by any instance, 0 when
// there is none (never saved, expired, or lost with Redis' data).
func (s *Store) DispatchLead(ctx context.Context) (time.Duration, error) {
	ms, err := getLeadScript.Run(ctx, s.rdb, []string{leadKey}).Int64()
	switch {
	case errors.Is(err, redis.Nil):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("store: dispatch lead: %w", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}
