package main

import (
	"context"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/infra/pushsub"
	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/lifecycle"
	"github.com/gemq-dev/gemq/internal/task"
)

// cmdDLQ runs `gemq dlq replay`: it moves dead-lettered task messages back
// to the tasks topic (pushsub.Replay). Only messages that decode as task
// envelopes are replayed; anything else stays in the dead-letter
// subscription and is listed. Replaying is idempotent: the worker
// deduplicates by task id, and a task that already has a terminal result
// is acknowledged without a Gemini call.
func cmdDLQ(ctx context.Context, args []string, e env) error {
	if len(args) == 0 || args[0] != "replay" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprintln(e.stdout, "Usage: gemq dlq replay [flags]   (gemq dlq replay --help for its flags)")
			return nil
		}
		return &exitError{code: exitUsage, msg: "want: gemq dlq replay [flags]"}
	}
	fs := newFlagSet("dlq replay", "dlq replay [--project P] [--subscription S] [--topic T] [--max N] [--dry-run]", e)
	projectF := fs.String("project", e.getenv("GOOGLE_CLOUD_PROJECT"), "Google Cloud project (default $GOOGLE_CLOUD_PROJECT; with $PUBSUB_EMULATOR_HOST, the local stack's)")
	subF := fs.String("subscription", stack.DeadLetterSubscription, "dead-letter subscription to drain (deployed: terraform output dead_letter_subscription)")
	topicF := fs.String("topic", stack.TasksTopic, "tasks topic to publish to (deployed: terraform output tasks_topic)")
	maxF := fs.Int("max", 0, "replay at most this many messages (0: all)")
	dryF := fs.Bool("dry-run", false, "only count what would be replayed; leave every message in place")
	idleF := fs.Duration("idle", 2*time.Second, "stop once no new message arrived for this long")
	if _, err := parse(fs, args[1:], e); err != nil {
		return err
	}
	emulator := e.getenv("PUBSUB_EMULATOR_HOST")
	project := *projectF
	if project == "" && emulator != "" {
		project = stack.DefaultProject
	}
	if project == "" {
		return &exitError{code: exitUsage, msg: "no project: pass --project or set GOOGLE_CLOUD_PROJECT"}
	}
	var opts []option.ClientOption
	if emulator != "" {
		opts = []option.ClientOption{option.WithEndpoint(emulator), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
	}
	client, err := pubsub.NewClient(ctx, project, opts...)
	if err != nil {
		return fmt.Errorf("pubsub new client: %w", err)
	}
	defer client.Close()
	res, err := pushsub.Replay(ctx, client, *subF, *topicF, pushsub.ReplayOptions{
		Max: *maxF, DryRun: *dryF, Idle: *idleF,
		Check: replayable,
	})
	verb := "replayed"
	if *dryF {
		verb = "would replay"
	}
	fmt.Fprintf(e.stdout, "%s %d message(s) from %s to %s; kept %d\n", verb, res.Replayed, *subF, *topicF, len(res.Kept))
	for _, k := range res.Kept {
		fmt.Fprintf(e.stdout, "kept %s: %s\n", k.MessageID, k.Reason)
	}
	return err
}

// replayable says why a dead-lettered message is kept ("" to replay it): it
// is not a task envelope, or the worker dead-lettered it itself (gemq_kind:
// undecodable, oversized, foreign, conflict, invalid_request), which the same
// message can never get past; replayed, it would only come back, and a
// replay that runs until the subscription is idle would loop on it.
func replayable(data []byte, attrs map[string]string) string {
	if kind := attrs[lifecycle.AttrDeadLetterKind]; kind != "" {
		return "dead-lettered by the worker as " + kind + ": " + attrs[lifecycle.AttrDeadLetterReason]
	}
	if _, err := task.Decode(data); err != nil {
		return "not a task envelope: " + err.Error()
	}
	return ""
}
