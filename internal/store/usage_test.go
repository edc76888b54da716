package store_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/internal/store"
)

func TestUsageSummedOnceWithTheTerminalWrite(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	deadline := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	nj := store.NewJob{ID: "tiers", Model: model, ContentHash: "h", TaskIDs: ids("tiers", keys(3)),
		Tier: "flex", AskedTier: "auto", TierReason: "flex: the deadline is far", Deadline: deadline}
	if _, _, err := s.CreateJob(ctx, nj); err != nil {
		t.Fatal(err)
	}
	lease := func(key string) store.Token {
		lr, err := s.LeaseTask(ctx, ref("tiers", key), store.LeaseRequest{Holder: "pubsub/" + key, TTL: time.Minute})
		if err != nil || lr.Outcome != store.Applied {
			t.Fatalf("lease %s: %+v %v", key, lr, err)
		}
		return lr.Token
	}
	resp := []byte(`{"candidates":[]}`)
	u := store.Usage{Tier: "flex", Asked: "flex", Input: 100, Cached: 40, Output: 20, Thinking: 7}
	tok := lease("k0")
	must(t, store.Applied)(s.CompleteWithUsage(ctx, ref("tiers", "k0"), tok, resp, u))
	// The same lease's retry (a lost reply) and another lease's late write
	// add nothing.
	must(t, store.Applied)(s.CompleteWithUsage(ctx, ref("tiers", "k0"), tok, resp, u))
	must(t, store.AlreadyDone)(s.CompleteWithUsage(ctx, ref("tiers", "k0"), store.Token{Holder: "other", Fence: tok.Fence + "0"}, resp, u))
	// A priority call served at standard: billed at standard, recorded.
	down := store.Usage{Tier: "standard", Asked: "priority", Input: 10, Output: 5}
	must(t, store.Applied)(s.CompleteWithUsage(ctx, ref("tiers", "k1"), lease("k1"), resp, down))
	must(t, store.Applied)(s.Fail(ctx, ref("tiers", "k2"), lease("k2"), []byte(`{"code":400}`)))

	j, err := s.GetJob(ctx, "tiers")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]store.TierUsage{
		"flex":     {Tasks: 1, Input: 100, Cached: 40, Output: 20, Thinking: 7},
		"standard": {Tasks: 1, Input: 10, Output: 5},
	}
	if diff := cmp.Diff(want, j.Usage); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
	if j.Downgraded != 1 || j.Tier != "flex" || j.AskedTier != "auto" || j.TierReason == "" || !j.Deadline.Equal(deadline) {
		t.Errorf("job = %+v", j)
	}
	rec, err := s.Result(ctx, "tiers", "k1")
	if err != nil || rec.Line().Downgrade == nil || *rec.Line().Downgrade != (store.Downgrade{Asked: "priority", Served: "standard"}) {
		t.Errorf("k1 line = %+v (%v), want its downgrade", rec.Line(), err)
	}
	page, _, err := s.ResultsPage(ctx, "tiers", 0, 10)
	if err != nil || len(page) != 3 || page[0].Downgrade != nil || page[1].Downgrade == nil || page[1].Published {
		t.Errorf("page = %+v (%v)", page, err)
	}
	// A retried CreateJob keeps the first tier settings.
	nj.Tier, nj.TierReason = "standard", "other"
	if j, _, err := s.CreateJob(ctx, nj); err != nil || j.Tier != "flex" {
		t.Errorf("retried CreateJob: tier %q (%v), want flex kept", j.Tier, err)
	}
	if _, err := s.CompleteWithUsage(ctx, ref("tiers", "k0"), tok, resp, store.Usage{Tier: "Flex:x"}); err == nil {
		t.Error("a tier name that could break the record's fields was accepted")
	}
}
