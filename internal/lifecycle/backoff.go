package lifecycle

import (
	"math/rand/v2"
	"time"
)

// backoff returns the delay before retry number n (1-based): base·2^(n-1),
// capped at max, with "equal jitter" (half fixed, half uniformly random) so
// that tasks failing together do not come back together.
func backoff(n int, base, max time.Duration) time.Duration {
	if n < 1 {
		n = 1
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}

// jitter returns a uniformly random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}
