package main

import (
	"testing"

	"github.com/gemq-dev/gemq/infra/geminisim"
)

func TestParseFaults(t *testing.T) {
	f, err := parseFaults("500=0.01, 503=0.02,504=0.03,hang=0.04,reset=0.05")
	if err != nil || f != (geminisim.Faults{Error500: 0.01, Error503: 0.02, Error504: 0.03, Hang: 0.04, Reset: 0.05}) {
		t.Errorf("parseFaults = %+v, %v", f, err)
	}
	for _, bad := range []string{"502=0.1", "500", "500=2", "500=0.6,503=0.6"} {
		if _, err := parseFaults(bad); err == nil {
			t.Errorf("parseFaults(%q) accepted", bad)
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--latency", "gaussian:1s"}, {"--faults", "x=1"}, {"--nope"}, {"--batch-failure-rate", "1.5"}, {"--batch-whole-failure-rate", "-1"}} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) accepted", args)
		}
	}
}
