// Package lazy builds a value on first use and keeps it only once the build
// succeeded.
//
// Cloud Functions link both of gemq's functions into each deployment, so
// their clients must not be built in init(); they are built by the first
// request instead. A failed build (a misconfiguration fixed by a redeploy, a
// transient dial error) must not be remembered for ever, which rules out
// sync.Once: Value retries it on the next call.
package lazy

import (
	"sync"
	"sync/atomic"
)

// Value holds a T built on first use. The zero Value is ready to use; it is
// safe for concurrent use and must not be copied after first use.
type Value[T any] struct {
	mu sync.Mutex
	v  atomic.Pointer[T]
}

// Get returns the value, calling build if no build has succeeded yet. Builds
// never run concurrently; once one succeeds, Get is one atomic load. build's
// error is returned as is and nothing is cached.
func (l *Value[T]) Get(build func() (T, error)) (T, error) {
	if p := l.v.Load(); p != nil {
		return *p, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.v.Load(); p != nil {
		return *p, nil
	}
	v, err := build()
	if err != nil {
		var zero T
		return zero, err
	}
	l.v.Store(&v)
	return v, nil
}

// Built reports whether a build has succeeded.
func (l *Value[T]) Built() bool { return l.v.Load() != nil }

// Reset forgets the value, so the next Get builds again. Tests use it to
// start from a process's first request.
func (l *Value[T]) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v.Store(nil)
}
