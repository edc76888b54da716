package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gemq-dev/gemq/internal/task"
)

// Headers the worker reads.
const (
	// headerTaskName is set by Cloud Tasks on every HTTP-target dispatch; its
	// presence means the body is the envelope JSON itself.
	headerTaskName = "X-CloudTasks-TaskName"
	// headerTaskRetry is Cloud Tasks' retry count for the current task.
	headerTaskRetry = "X-CloudTasks-TaskRetryCount"
)

// maxBodyBytes caps a request body: a push envelope holds the task envelope
// in base64 (4/3 of task.MaxEnvelopeBytes) plus attributes and ids.
const maxBodyBytes = task.MaxEnvelopeBytes*4/3 + 64<<10

// Sources of a delivery.
const (
	sourcePubSub     = "pubsub"     // a Pub/Sub push delivery
	sourceCloudTasks = "cloudtasks" // a Cloud Tasks callback
)

// delivery is one decoded message.
type delivery struct {
	// source is sourcePubSub or sourceCloudTasks.
	source string
	// id is the Pub/Sub message id or the Cloud Task name, for logs.
	id string
	// env is the decoded envelope; valid only when err is nil.
	env task.Envelope
	// raw is the task envelope's bytes as delivered (poison records keep it).
	raw []byte
}

// poisonError is a message that can never be processed: acknowledge it after
// recording why.
type poisonError struct{ err error }

func (e *poisonError) Error() string { return "poison message: " + e.err.Error() }
func (e *poisonError) Unwrap() error { return e.err }

// pushEnvelope is the body of a Pub/Sub push delivery.
type pushEnvelope struct {
	Message *struct {
		Data        []byte            `json:"data"` // base64 in JSON
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		MessageIDSn string            `json:"message_id"`
	} `json:"message"`
	Subscription string `json:"subscription"`
}

// decode reads the request body as a Cloud Tasks callback (header
// X-CloudTasks-TaskName: the body is the task envelope) or else a Pub/Sub push
// envelope, and decodes the task envelope it carries. A body that cannot be
// read is an ordinary error (redeliver); one that can be read but is not a
// valid message is a *poisonError (ack). d.raw and d.id are set as far as
// decoding got, also on error.
func decode(r *http.Request) (delivery, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return delivery{}, &poisonError{fmt.Errorf("body over %d bytes", mbe.Limit)}
		}
		return delivery{}, fmt.Errorf("read body: %w", err)
	}
	var d delivery
	if name := r.Header.Get(headerTaskName); name != "" {
		d.source, d.id, d.raw = sourceCloudTasks, name, body
	} else {
		d.source = sourcePubSub
		var push pushEnvelope
		if err := json.Unmarshal(body, &push); err != nil {
			return d, &poisonError{fmt.Errorf("push envelope: %w", err)}
		}
		if push.Message == nil {
			return d, &poisonError{errors.New("push envelope: no message")}
		}
		d.id = push.Message.MessageID
		if d.id == "" {
			d.id = push.Message.MessageIDSn
		}
		d.raw = push.Message.Data
	}
	env, err := task.Decode(d.raw)
	if err != nil {
		return d, &poisonError{err}
	}
	d.env = env
	return d, nil
}
