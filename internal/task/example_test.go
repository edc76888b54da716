package task_test

import (
	"encoding/json"
	"fmt"

	"github.com/gemq-dev/gemq/internal/task"
)

// A task message as a user publishes it straight to the tasks topic, e.g.
//
//	gcloud pubsub topics publish gemq-tasks --message='{"v":1,"job_id":"docs-example","key":"greeting-1","model":"gemini-2.5-flash","request":{"contents":[{"role":"user","parts":[{"text":"Say hello in French."}]}]}}'
//
// Decode fills in the task id; without "job_id" it would derive an
// "adhoc-…" job id from the content.
func ExampleDecode() {
	msg := `{"v":1,"job_id":"docs-example","key":"greeting-1","model":"gemini-2.5-flash",` +
		`"request":{"contents":[{"role":"user","parts":[{"text":"Say hello in French."}]}]}}`
	e, err := task.Decode([]byte(msg))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.JobID, e.Key, e.Model, e.TaskID)

	_, err = task.Decode([]byte(`{"v":1,"key":"k","model":"gemini-2.5-flash","request":{},"Model":"x"}`))
	fmt.Println(err)
	// Output:
	// docs-example greeting-1 gemini-2.5-flash 0504f7ef1d17e9e7bc1b090543620409
	// task envelope: field Model: unknown field
}

// Encode writes the envelope the ingest function publishes.
func ExampleEncode() {
	data, err := task.Encode(task.Envelope{
		V:       task.Version,
		JobID:   "docs-example",
		Key:     "greeting-1",
		Model:   "gemini-2.5-flash",
		Request: json.RawMessage(`{"contents": [{"parts": [{"text": "Say hello in French."}]}]}`),
	})
	fmt.Println(string(data), err)
	// Output:
	// {"v":1,"job_id":"docs-example","key":"greeting-1","model":"gemini-2.5-flash","request":{"contents":[{"parts":[{"text":"Say hello in French."}]}]},"task_id":"0504f7ef1d17e9e7bc1b090543620409"} <nil>
}
