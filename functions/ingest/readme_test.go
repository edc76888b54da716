package ingest

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/gemq-dev/gemq/internal/task"
)

// readmeSection returns the README's "Ingest API" section.
func readmeSection(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Ingest API\n")
	if !ok {
		t.Fatal("README.md has no Ingest API section")
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	return sec
}

// TestReadmeExamples checks that the README's examples work as written: the
// JSON job is accepted, and the envelope in the gcloud command decodes.
func TestReadmeExamples(t *testing.T) {
	sec := readmeSection(t)
	jobRE := regexp.MustCompile("(?s)```json\n(\\{\"job_id\".*?)```")
	mj := jobRE.FindStringSubmatch(sec)
	if mj == nil {
		t.Fatal("README: no JSON job example")
	}
	e := newEnv(t)
	if a := decodeAccepted(t, e.postJSON(mj[1])); a.JobID != "nightly-2024-06-01" || a.Accepted != 1 {
		t.Errorf("README job example accepted as %+v", a)
	}

	pubRE := regexp.MustCompile(`gcloud pubsub topics publish gemq-tasks (?:--project=\S+ )?--message='([^']*)'`)
	mp := pubRE.FindStringSubmatch(sec)
	if mp == nil {
		t.Fatal("README: no gcloud publish example")
	}
	env, err := task.Decode([]byte(mp[1]))
	if err != nil {
		t.Fatalf("README envelope example does not decode: %v", err)
	}
	if env.JobID != "docs-example" || env.Key != "greeting-1" || !strings.Contains(sec, "/v1/jobs/"+env.JobID+"/requests/"+env.Key) {
		t.Errorf("README envelope example %+v does not match its status command", env)
	}
	if !strings.Contains(sec, `"maxOutputTokens": 256`) {
		t.Error("README job example changed; update this test")
	}
}
