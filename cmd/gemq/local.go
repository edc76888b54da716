package main

import (
	"context"
)

// cmdDev starts the local stack and leaves it running.
func cmdDev(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("dev", "dev [flags]", e)
	if _, err := parse(fs, args, e, 0); err != nil {
		return err
	}
	return &exitError{code: exitStack, msg: "the local stack is not wired yet (waiting for functions/ingest and functions/worker)"}
}

// cmdRun runs the example job on the local stack.
func cmdRun(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("run", "run [flags]", e)
	if _, err := parse(fs, args, e, 0); err != nil {
		return err
	}
	return &exitError{code: exitStack, msg: "the local stack is not wired yet (waiting for functions/ingest and functions/worker)"}
}
