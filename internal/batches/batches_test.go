package batches

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/redistest"
)

var scope = limiter.Scope{Project: "p", Model: "gemini-2.5-flash"}

func member(i int) Member {
	return Member{JobID: "j", TaskID: fmt.Sprintf("%032x", i), Deferral: 1, Tokens: 10, Envelope: json.RawMessage(`{"v":1}`)}
}

func TestGroupLife(t *testing.T) {
	ctx := context.Background()
	s := New(redistest.Start(t).Client(t), time.Hour)
	b := Bounds{MaxEntries: 3, MaxBytes: 1 << 20, MaxTokens: 1000}
	r1, err := s.Add(ctx, scope, member(1), b, "")
	if err != nil || !r1.First || r1.Existing || r1.Full || r1.Deferral != 1 {
		t.Fatalf("first add = %+v %v", r1, err)
	}
	// Another member joins the open group, even without a hint.
	r2, err := s.Add(ctx, scope, member(2), b, "")
	if err != nil || r2.Group != r1.Group || r2.First || r2.Full {
		t.Fatalf("second add = %+v %v, want group %s", r2, err, r1.Group)
	}
	// A task is a member once: adding it again answers its membership.
	m := member(2)
	m.Deferral = 7
	again, err := s.Add(ctx, scope, m, b, r1.Group)
	if err != nil || !again.Existing || again.Group != r1.Group || again.Deferral != 1 {
		t.Fatalf("re-add = %+v %v, want the existing membership with deferral 1", again, err)
	}
	r3, err := s.Add(ctx, scope, member(3), b, r1.Group)
	if err != nil || !r3.Full || r3.Group != r1.Group {
		t.Fatalf("third add = %+v %v, want the group full", r3, err)
	}
	// Full: the next task opens a new group.
	r4, err := s.Add(ctx, scope, member(4), b, r1.Group)
	if err != nil || r4.Group == r1.Group || !r4.First {
		t.Fatalf("fourth add = %+v %v, want a new group", r4, err)
	}
	g, err := s.Seal(ctx, scope, r1.Group)
	if err != nil || g.State != Sealed || g.Entries != 3 || g.Tokens != 30 {
		t.Fatalf("seal = %+v %v", g, err)
	}
	if g, _ = s.MarkCreating(ctx, scope, r1.Group); g.State != Creating || g.Creates != 1 {
		t.Fatalf("creating = %+v", g)
	}
	if g, _ = s.MarkCreating(ctx, scope, r1.Group); g.Creates != 2 {
		t.Fatalf("creating again = %+v, want creates 2", g)
	}
	if g, _ = s.MarkRunning(ctx, scope, r1.Group, "batches/x", true); g.State != Running || g.Batch != "batches/x" || !g.File {
		t.Fatalf("running = %+v", g)
	}
	// Steps past their state change nothing.
	if g, _ = s.MarkCreating(ctx, scope, r1.Group); g.State != Running || g.Creates != 2 {
		t.Fatalf("creating a running group = %+v", g)
	}
	if g, _ = s.Seal(ctx, scope, r1.Group); g.State != Running {
		t.Fatalf("sealing a running group = %+v", g)
	}
	ms, err := s.Members(ctx, scope, r1.Group)
	if err != nil || len(ms) != 3 || ms[0].TaskID != member(1).TaskID || ms[2].TaskID != member(3).TaskID {
		t.Fatalf("members = %+v %v", ms, err)
	}
	if g, _ = s.Count(ctx, scope, r1.Group, CountPasses); g.Passes != 1 {
		t.Fatalf("passes = %d", g.Passes)
	}
	if err := s.Finish(ctx, scope, r1.Group); err != nil {
		t.Fatal(err)
	}
	if g, _ = s.Get(ctx, scope, r1.Group); g.State != Done {
		t.Fatalf("finished = %+v", g)
	}
	if ms, _ := s.Members(ctx, scope, r1.Group); len(ms) != 0 {
		t.Errorf("members after finish = %d, want their envelopes gone", len(ms))
	}
	// Once its group ended, a task may be batched again (a new membership).
	r5, err := s.Add(ctx, scope, member(1), b, "")
	if err != nil || r5.Existing || r5.Group != r4.Group {
		t.Errorf("add after finish = %+v %v, want a new membership in the open group %s", r5, err, r4.Group)
	}
	if _, err := s.Get(ctx, scope, "gemq-batch-none"); err != ErrNotFound {
		t.Errorf("unknown group: %v", err)
	}
}

func TestAddClosesAGroupTheTaskDoesNotFit(t *testing.T) {
	ctx := context.Background()
	s := New(redistest.Start(t).Client(t), time.Hour)
	b := Bounds{MaxEntries: 100, MaxBytes: 1 << 20, MaxTokens: 25}
	r1, _ := s.Add(ctx, scope, member(1), b, "")
	r2, _ := s.Add(ctx, scope, member(2), b, "")
	if r2.Group != r1.Group {
		t.Fatalf("second member in %s, want %s", r2.Group, r1.Group)
	}
	r3, err := s.Add(ctx, scope, member(3), b, r1.Group) // 30 tokens > 25
	if err != nil || r3.Closed != r1.Group || r3.Group == r1.Group || !r3.First {
		t.Fatalf("third add = %+v %v, want %s closed and a new group opened", r3, err, r1.Group)
	}
	// The sealed group took no new member.
	if g, _ := s.Seal(ctx, scope, r1.Group); g.Entries != 2 {
		t.Errorf("closed group has %d entries, want 2", g.Entries)
	}
}

func TestSealedGroupTakesNoMember(t *testing.T) {
	ctx := context.Background()
	s := New(redistest.Start(t).Client(t), time.Hour)
	b := Bounds{MaxEntries: 100, MaxBytes: 1 << 20, MaxTokens: 1000}
	r1, _ := s.Add(ctx, scope, member(1), b, "")
	if _, err := s.Seal(ctx, scope, r1.Group); err != nil {
		t.Fatal(err)
	}
	r2, err := s.Add(ctx, scope, member(2), b, r1.Group)
	if err != nil || r2.Group == r1.Group || !r2.First {
		t.Fatalf("add after seal = %+v %v, want a new group", r2, err)
	}
}
