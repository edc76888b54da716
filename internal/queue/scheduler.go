package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TaskName returns the Cloud Task id for deferral number n of task taskID: 32 hex
// characters of SHA-256 over both, then "-n". The same inputs always give the same
// name, so a retried CreateTask is de-duplicated by Cloud Tasks; the result is a
// valid task id ([A-Za-z0-9_-], far below 500 characters) whatever taskID holds, and
// its hashed prefix spreads names evenly as Cloud Tasks recommends.
func TaskName(taskID string, n int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(len(taskID)) + ":" + taskID + ":" + strconv.Itoa(n)))
	return hex.EncodeToString(sum[:16]) + "-" + strconv.Itoa(n)
}

// Scheduler creates HTTP Cloud Tasks that POST a body to one target URL at a given
// time. It is safe for concurrent use.
type Scheduler struct {
	client    *cloudtasks.Client
	queuePath string
	targetURL string
	saEmail   string
}

// NewScheduler returns a Scheduler creating tasks in queuePath
// ("projects/P/locations/L/queues/Q") that POST to targetURL. When
// serviceAccountEmail is set, each request carries an OIDC token for that account
// with the target URL as audience; empty sends no token (local use).
func NewScheduler(client *cloudtasks.Client, queuePath, targetURL, serviceAccountEmail string) *Scheduler {
	return &Scheduler{client: client, queuePath: queuePath, targetURL: targetURL, saEmail: serviceAccountEmail}
}

// Schedule creates task name (an id such as TaskName's, or a full task name in the
// queue; empty lets Cloud Tasks pick one, with no de-duplication) that POSTs body
// with Content-Type application/json to the target URL at time at (now, if at is
// past or zero). A task of that name that exists or ran recently (ALREADY_EXISTS) is
// success: nil. Other failures are returned wrapped as "cloudtasks create task: ...".
func (s *Scheduler) Schedule(ctx context.Context, name string, at time.Time, body []byte) error {
	_, err := s.Create(ctx, name, at, body)
	return err
}

// Create is Schedule reporting whether this call created the task: created is
// false (with a nil error) when a task of that name exists or ran recently
// (ALREADY_EXISTS), in which case the existing task, with its own body, is the
// one that will run and body is dropped.
func (s *Scheduler) Create(ctx context.Context, name string, at time.Time, body []byte) (created bool, err error) {
	req := &cloudtaskspb.HttpRequest{
		Url:        s.targetURL,
		HttpMethod: cloudtaskspb.HttpMethod_POST,
		Headers:    map[string]string{"Content-Type": "application/json"},
		Body:       body,
	}
	if s.saEmail != "" {
		req.AuthorizationHeader = &cloudtaskspb.HttpRequest_OidcToken{OidcToken: &cloudtaskspb.OidcToken{
			ServiceAccountEmail: s.saEmail,
			Audience:            s.targetURL,
		}}
	}
	task := &cloudtaskspb.Task{MessageType: &cloudtaskspb.Task_HttpRequest{HttpRequest: req}}
	if name != "" {
		if strings.Contains(name, "/") {
			task.Name = name
		} else {
			task.Name = s.queuePath + "/tasks/" + name
		}
	}
	if !at.IsZero() {
		task.ScheduleTime = timestamppb.New(at)
	}
	_, err = s.client.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: s.queuePath, Task: task})
	if status.Code(err) == codes.AlreadyExists {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cloudtasks create task: %w", err)
	}
	return true, nil
}

// NewCloudTasksClient returns a Cloud Tasks client: for the real service with
// Application Default Credentials when endpoint is empty, or for an emulator at
// endpoint ("host:port", GEMQ_CLOUDTASKS_ENDPOINT) over plain gRPC without
// credentials.
func NewCloudTasksClient(ctx context.Context, endpoint string) (*cloudtasks.Client, error) {
	var opts []option.ClientOption
	if endpoint != "" {
		opts = []option.ClientOption{
			option.WithEndpoint(endpoint),
			option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		}
	}
	c, err := cloudtasks.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("cloudtasks new client: %w", err)
	}
	return c, nil
}

// QueueOptions configures EnsureQueue. Zero fields take the service's defaults.
type QueueOptions struct {
	MaxDispatchesPerSecond  float64 // at most 500
	MaxConcurrentDispatches int32   // at most 5000
	MaxAttempts             int32   // -1: unlimited
	MinBackoff, MaxBackoff  time.Duration
	MaxDoublings            int32
	MaxRetryDuration        time.Duration
}

// EnsureQueue creates queuePath ("projects/P/locations/L/queues/Q") with opts
// unless it exists; an existing queue is left unchanged.
func EnsureQueue(ctx context.Context, client *cloudtasks.Client, queuePath string, opts QueueOptions) error {
	i := strings.LastIndex(queuePath, "/queues/")
	if i < 0 {
		return fmt.Errorf("cloudtasks create queue: %q is not projects/P/locations/L/queues/Q", queuePath)
	}
	q := &cloudtaskspb.Queue{
		Name: queuePath,
		RateLimits: &cloudtaskspb.RateLimits{
			MaxDispatchesPerSecond:  opts.MaxDispatchesPerSecond,
			MaxConcurrentDispatches: opts.MaxConcurrentDispatches,
		},
		RetryConfig: &cloudtaskspb.RetryConfig{MaxAttempts: opts.MaxAttempts, MaxDoublings: opts.MaxDoublings},
	}
	if opts.MinBackoff > 0 {
		q.RetryConfig.MinBackoff = durationpb.New(opts.MinBackoff)
	}
	if opts.MaxBackoff > 0 {
		q.RetryConfig.MaxBackoff = durationpb.New(opts.MaxBackoff)
	}
	if opts.MaxRetryDuration > 0 {
		q.RetryConfig.MaxRetryDuration = durationpb.New(opts.MaxRetryDuration)
	}
	_, err := client.CreateQueue(ctx, &cloudtaskspb.CreateQueueRequest{Parent: queuePath[:i], Queue: q})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("cloudtasks create queue %s: %w", queuePath, err)
	}
	return nil
}
