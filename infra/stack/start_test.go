package stack_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/redistest"
)

// noRedisOnPath empties PATH: a Start that got as far as starting Redis
// fails with ErrNoRedis, so any other error proves the check ran before
// anything was started.
func noRedisOnPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
}

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

const goodQuotas = `{"scopes":[{"project":"*","model":"gemini-2.5-flash","dimensions":[{"name":"rpm","unit":"requests","limit":10,"period":"1m"}]}]}`

func TestQuotaConfigCheckedBeforeAnythingStarts(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.json")
	os.WriteFile(badFile, []byte(`{"scopes": [`), 0o644)
	goodFile := filepath.Join(dir, "good.json")
	os.WriteFile(goodFile, []byte(goodQuotas), 0o644)
	tests := []struct {
		name    string
		env     func(string) string
		wantVar string
		wantMsg string
	}{
		{"malformed GEMQ_QUOTAS with a key", envOf("GEMINI_API_KEY", "k", "GEMQ_QUOTAS", "{"), "GEMQ_QUOTAS", "quota config"},
		{"malformed GEMQ_QUOTAS without a key", envOf("GEMQ_QUOTAS", "{"), "GEMQ_QUOTAS", "quota config"},
		{"malformed GEMQ_QUOTAS_FILE", envOf("GEMINI_API_KEY", "k", "GEMQ_QUOTAS_FILE", badFile), "GEMQ_QUOTAS_FILE", badFile},
		{"missing GEMQ_QUOTAS_FILE", envOf("GEMQ_QUOTAS_FILE", filepath.Join(dir, "nope.json")), "GEMQ_QUOTAS_FILE", "nope.json"},
		// The functions refuse both; so does the stack, rather than pick one.
		{"both set", envOf("GEMINI_API_KEY", "k", "GEMQ_QUOTAS", goodQuotas, "GEMQ_QUOTAS_FILE", goodFile), "GEMQ_QUOTAS", "set only one"},
		{"no quota for the model", envOf("GEMINI_API_KEY", "k", "GEMQ_QUOTAS", strings.Replace(goodQuotas, "gemini-2.5-flash", "gemini-2.5-pro", 1)), "GEMQ_QUOTAS", "no quota for model gemini-2.5-flash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noRedisOnPath(t)
			_, err := stack.Start(context.Background(), stack.Options{Getenv: tt.env, Dir: t.TempDir()})
			var ee *stack.EnvError
			if !errors.As(err, &ee) {
				t.Fatalf("Start = %v, want an *EnvError (before Redis)", err)
			}
			if ee.Var != tt.wantVar || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), tt.wantVar) {
				t.Errorf("error names %s: %v; want %s and %q", ee.Var, err, tt.wantVar, tt.wantMsg)
			}
		})
	}
}

func TestFixedPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tt := range []struct {
		option string
		opts   stack.Options
	}{
		{"PubSubAddr", stack.Options{PubSubAddr: l.Addr().String()}},
		{"IngestAddr", stack.Options{IngestAddr: l.Addr().String()}},
		{"TasksAddr", stack.Options{TasksAddr: l.Addr().String()}},
		{"GeminiAddr", stack.Options{GeminiAddr: l.Addr().String()}},
	} {
		t.Run(tt.option, func(t *testing.T) {
			noRedisOnPath(t)
			o := tt.opts
			o.Getenv, o.Dir = envOf(), t.TempDir()
			_, err := stack.Start(context.Background(), o)
			var le *stack.ListenError
			if !errors.As(err, &le) || le.Option != tt.option || !le.InUse() || le.Addr != l.Addr().String() {
				t.Fatalf("Start = %v, want a *ListenError for %s in use", err, tt.option)
			}
			if !strings.Contains(err.Error(), l.Addr().String()) || !strings.Contains(err.Error(), "already in use") {
				t.Errorf("message: %v", err)
			}
		})
	}
}

func TestOutsideServicesNamed(t *testing.T) {
	dead := func() string {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		defer l.Close()
		return l.Addr().String()
	}()
	for _, v := range []string{"PUBSUB_EMULATOR_HOST", "GEMQ_CLOUDTASKS_ENDPOINT", "REDIS_ADDR"} {
		t.Run(v, func(t *testing.T) {
			noRedisOnPath(t)
			start := time.Now()
			_, err := stack.Start(context.Background(), stack.Options{Getenv: envOf(v, dead), Dir: t.TempDir()})
			var ee *stack.EnvError
			if !errors.As(err, &ee) || ee.Var != v || !strings.Contains(err.Error(), "unset "+v) {
				t.Fatalf("Start = %v, want an *EnvError naming %s and saying to unset it", err, v)
			}
			if d := time.Since(start); d > 15*time.Second {
				t.Errorf("took %v to fail", d)
			}
		})
	}
}

// TestPubSubServedByAnotherStack: PUBSUB_EMULATOR_HOST pointing at a
// Pub/Sub where another stack's push subscription exists (a `gemq dev`
// still running) is refused, naming the variable.
func TestPubSubServedByAnotherStack(t *testing.T) {
	rds := redistest.Start(t)
	ps := pstest.NewServer()
	defer ps.Close()
	t.Setenv("PUBSUB_EMULATOR_HOST", ps.Addr)
	ctx := context.Background()
	c, err := queue.NewPubSubClient(ctx, stack.DefaultProject)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := queue.EnsureTopic(ctx, c, stack.TasksTopic); err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureSubscription(ctx, c, stack.PushSubscription, stack.TasksTopic, queue.SubscriptionOptions{AckDeadline: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	_, err = stack.Start(ctx, stack.Options{Getenv: envOf("PUBSUB_EMULATOR_HOST", ps.Addr, "REDIS_ADDR", rds.Addr), Dir: t.TempDir()})
	var ee *stack.EnvError
	if !errors.As(err, &ee) || ee.Var != "PUBSUB_EMULATOR_HOST" || !strings.Contains(err.Error(), "another gemq stack") {
		t.Fatalf("Start = %v, want an *EnvError naming PUBSUB_EMULATOR_HOST and the other stack", err)
	}
	// The refused stack did not take the subscription away from the other.
	if _, err := c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{
		Subscription: "projects/" + stack.DefaultProject + "/subscriptions/" + stack.PushSubscription}); err != nil {
		t.Errorf("the other stack's subscription is gone: %v", err)
	}
}

// TestFunctionsConfigCheckedBeforeUp: a variable the functions would
// refuse fails Start, naming it, instead of a 500 on the first job.
func TestFunctionsConfigCheckedBeforeUp(t *testing.T) {
	rds := redistest.Start(t)
	_, err := stack.Start(context.Background(), stack.Options{
		Getenv: envOf("REDIS_ADDR", rds.Addr), Dir: t.TempDir(),
		Env: map[string]string{"GEMQ_LEASE": "forever"},
	})
	var ee *stack.EnvError
	if !errors.As(err, &ee) || !strings.Contains(ee.Var, "GEMQ_LEASE") {
		t.Fatalf("Start = %v, want an *EnvError naming GEMQ_LEASE", err)
	}
}
