package lazy

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestGetRetriesFailuresAndCachesSuccess(t *testing.T) {
	var l Value[int]
	var builds atomic.Int32
	fail := errors.New("no config")
	build := func(ok bool) func() (int, error) {
		return func() (int, error) {
			builds.Add(1)
			if !ok {
				return 0, fail
			}
			return 42, nil
		}
	}
	if v, err := l.Get(build(false)); !errors.Is(err, fail) || v != 0 {
		t.Fatalf("failed build: Get = %d, %v; want 0, %v", v, err, fail)
	}
	if v, err := l.Get(build(true)); err != nil || v != 42 {
		t.Fatalf("after a failure: Get = %d, %v; want 42 (a failure is not cached)", v, err)
	}
	if v, err := l.Get(build(false)); err != nil || v != 42 {
		t.Fatalf("after a success: Get = %d, %v; want the cached 42", v, err)
	}
	if n := builds.Load(); n != 2 {
		t.Fatalf("builds = %d, want 2", n)
	}
}

func TestGetBuildsOnceUnderConcurrency(t *testing.T) {
	var l Value[*int]
	var builds atomic.Int32
	var wg sync.WaitGroup
	got := make([]*int, 64)
	for i := range got {
		wg.Go(func() {
			v, err := l.Get(func() (*int, error) {
				builds.Add(1)
				return new(int), nil
			})
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	wg.Wait()
	if n := builds.Load(); n != 1 {
		t.Fatalf("builds = %d, want 1", n)
	}
	for i, v := range got {
		if v != got[0] {
			t.Fatalf("caller %d got a different value", i)
		}
	}
}

func TestBuiltAndReset(t *testing.T) {
	var l Value[string]
	if l.Built() {
		t.Fatal("zero Value reports Built")
	}
	l.Get(func() (string, error) { return "a", nil })
	if !l.Built() {
		t.Fatal("Built = false after a successful Get")
	}
	l.Reset()
	if l.Built() {
		t.Fatal("Built = true after Reset")
	}
	if v, _ := l.Get(func() (string, error) { return "b", nil }); v != "b" {
		t.Fatalf("Get after Reset = %q, want a fresh build", v)
	}
}
