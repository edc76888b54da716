// Command tasksemu runs the Cloud Tasks emulator (package infra/tasksemu) on a port:
//
//	go run ./infra/cmd/tasksemu --addr 127.0.0.1:8123 --queue projects/p/locations/l/queues/q
//
// Point the real client at it with option.WithEndpoint(addr), option.WithoutAuthentication()
// and insecure gRPC credentials (gemq: GEMQ_CLOUDTASKS_ENDPOINT=addr). It stops on
// SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/infra/tasksemu"
)

// queueList collects repeated --queue flags.
type queueList []string

func (q *queueList) String() string     { return strings.Join(*q, ",") }
func (q *queueList) Set(v string) error { *q = append(*q, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tasksemu:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("tasksemu", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8123", "address to serve the Cloud Tasks gRPC API on")
	dedup := fs.Duration("dedup-window", tasksemu.DefaultDedupWindow, "how long a task name stays reserved after the task ran or was deleted")
	minDeadline := fs.Duration("min-dispatch-deadline", tasksemu.DefaultMinDispatchDeadline, "smallest dispatch_deadline accepted (the real service: 15s)")
	logLevel := fs.String("log-level", "info", "debug (one line per dispatch), info, warn or error")
	var queues queueList
	fs.Var(&queues, "queue", "queue to create at start-up, projects/P/locations/L/queues/Q (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	emu := tasksemu.New(tasksemu.Options{Addr: *addr, DedupWindow: *dedup, MinDispatchDeadline: *minDeadline, Logger: logger})
	bound, err := emu.Start()
	if err != nil {
		return err
	}
	defer emu.Stop()
	if err := createQueues(bound, queues); err != nil {
		return err
	}
	logger.Info("Cloud Tasks emulator listening", "addr", bound, "queues", queues.String())
	fmt.Printf("GEMQ_CLOUDTASKS_ENDPOINT=%s\n", bound)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	logger.Info("stopping")
	return nil
}

// createQueues creates the queues through the real client, as a user would.
func createQueues(addr string, queues []string) error {
	if len(queues) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := cloudtasks.NewClient(ctx, option.WithEndpoint(addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		return fmt.Errorf("cloudtasks client: %w", err)
	}
	defer client.Close()
	for _, name := range queues {
		i := strings.LastIndex(name, "/queues/")
		if i < 0 {
			return fmt.Errorf("--queue %q: want projects/P/locations/L/queues/Q", name)
		}
		_, err := client.CreateQueue(ctx, &cloudtaskspb.CreateQueueRequest{Parent: name[:i], Queue: &cloudtaskspb.Queue{Name: name}})
		if err != nil {
			return fmt.Errorf("cloudtasks create queue %s: %w", name, err)
		}
	}
	return nil
}
