package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/gemq-dev/gemq/infra/bench"
)

// redisBytes is the Redis footprint benchmark's name (-only redis-bytes).
const redisBytes = "redis-bytes"

// redisBytesTasks is its job's size: enough tasks that per-task bytes
// dominate the job's fixed keys.
const redisBytesTasks = 10_000

// redisBytesGrace is the run's GEMQ_RESULT_BODY_GRACE: longer than the job
// takes, so that the job's footprint is measured with every answer in.
const redisBytesGrace = 3 * time.Minute

// runRedisBytesChild runs the benchmark in this (child) process, which
// holds its own stack, and writes the result to out.
func runRedisBytesChild(ctx context.Context, out string) error {
	r, err := bench.RunRedisBytes(ctx, redisBytesTasks, redisBytesGrace, os.Stderr)
	if err != nil {
		r.Error = err.Error()
	}
	if werr := r.WriteJSON(out); werr != nil {
		return werr
	}
	return err
}

// redisBytesSection runs the benchmark in a child process and renders it.
func redisBytesSection(ctx context.Context, dir, command string) (bench.Section, error) {
	fmt.Fprintf(os.Stderr, "gemqbench: %s: %d tasks, answers leaving Redis for Cloud Storage ...\n", redisBytes, redisBytesTasks)
	var r bench.RedisBytesResult
	if err := runChild(ctx, dir, redisBytes, &r); err != nil {
		return bench.Section{}, err
	}
	if r.Error != "" {
		return bench.Section{}, fmt.Errorf("%s: %s", redisBytes, r.Error)
	}
	return r.Section(command), nil
}
