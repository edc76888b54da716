// Command gemqworker serves one of gemq's functions (Worker by default, or
// Ingest) in its own process, exactly as Cloud Functions Gen2 does: the
// functions framework with FUNCTION_TARGET set, configuration from the
// environment (the variables Terraform sets; README "Configuration").
//
//	FUNCTION_TARGET=Worker PORT=8081 REDIS_ADDR=... GOOGLE_CLOUD_PROJECT=... gemqworker
//
// It exists so that a function can be a separate process that a test
// harness (infra/chaos) can SIGKILL and restart mid-call; the in-process
// stack (infra/stack) cannot lose its worker that way. It listens on
// 127.0.0.1:$PORT (HOST overrides the host) and prints "listening ADDR" on
// standard error once it accepts connections.
package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	_ "github.com/gemq-dev/gemq" // registers "Ingest" and "Worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gemqworker:", err)
		os.Exit(2)
	}
}

func run() error {
	target := os.Getenv("FUNCTION_TARGET")
	switch target {
	case "":
		os.Setenv("FUNCTION_TARGET", "Worker")
	case "Worker", "Ingest":
	default:
		return fmt.Errorf("FUNCTION_TARGET %q: want Worker or Ingest", target)
	}
	port := os.Getenv("PORT")
	if port == "" {
		return fmt.Errorf("PORT is required")
	}
	host := os.Getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	errc := make(chan error, 1)
	go func() { errc <- funcframework.StartHostPort(host, port) }()
	addr := net.JoinHostPort(host, port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case err := <-errc:
			return fmt.Errorf("funcframework.StartHostPort %s: %w", addr, err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s: %w", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "listening", addr)
	return <-errc
}
