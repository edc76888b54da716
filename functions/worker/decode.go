package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gemq-dev/gemq/internal/lifecycle"
	"github.com/gemq-dev/gemq/internal/task"
)

// Headers the worker reads.
const (
	// headerTaskName is set by Cloud Tasks on every HTTP-target dispatch; its
	// presence means the body is the envelope JSON itself.
	headerTaskName = "X-CloudTasks-TaskName"
	// headerTaskRetry is Cloud Tasks' retry count for the current task.
	headerTaskRetry = "X-CloudTasks-TaskRetryCount"
	// headerTaskETA is the task's schedule time, in seconds since the
	// epoch (with a fraction).
	headerTaskETA = "X-CloudTasks-TaskETA"
)

// maxBodyBytes caps a request body the worker decodes: a push envelope holds
// the task envelope in base64 (4/3 of task.MaxEnvelopeBytes) plus attributes
// and ids.
const maxBodyBytes = task.MaxEnvelopeBytes*4/3 + 64<<10

// maxCopyBytes caps a body the worker reads at all: a larger message (up to
// Pub/Sub's 10 MB, in base64) is still read, so that its copy can be
// dead-lettered, but not decoded.
const maxCopyBytes = 14 << 20

// pushEnvelope is the body of a Pub/Sub push delivery.
type pushEnvelope struct {
	Message *struct {
		Data        []byte            `json:"data"` // base64 in JSON
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		MessageIDSn string            `json:"message_id"`
	} `json:"message"`
	Subscription string `json:"subscription"`
	// DeliveryAttempt is set when the subscription has a dead-letter policy.
	DeliveryAttempt int `json:"deliveryAttempt"`
}

// decode reads the request body as a Cloud Tasks callback (header
// X-CloudTasks-TaskName: the body is the task envelope, or a batch group's
// step) or else a Pub/Sub push
// envelope, and decodes the task envelope it carries. A body that cannot be
// read is an error (answer non-2xx); one that can be read but is not a
// valid message is a delivery with Invalid set (dead-lettered).
func decode(r *http.Request) (lifecycle.Delivery, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxCopyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return lifecycle.Delivery{Source: lifecycle.PubSub, Kind: lifecycle.KindOversized, Data: body,
				Invalid: fmt.Errorf("message body over %d bytes", mbe.Limit)}, nil
		}
		return lifecycle.Delivery{}, fmt.Errorf("read body: %w", err)
	}
	var d lifecycle.Delivery
	if name := r.Header.Get(headerTaskName); name != "" {
		d.Source, d.ID, d.Data = lifecycle.CloudTasks, name, body
		d.Attempt, _ = strconv.Atoi(r.Header.Get(headerTaskRetry))
		if eta, err := strconv.ParseFloat(r.Header.Get(headerTaskETA), 64); err == nil && eta > 0 {
			d.ScheduledAt = time.UnixMicro(int64(eta * 1e6))
		}
		// A batch group's seal or poll (the Batch tier), not a task.
		if step, ok, err := lifecycle.DecodeBatchStep(body); ok {
			if err != nil {
				d.Invalid = err
			} else {
				d.Batch = &step
			}
			return d, nil
		}
	} else {
		d.Source = lifecycle.PubSub
		var push pushEnvelope
		if err := json.Unmarshal(body, &push); err != nil {
			d.Data, d.Invalid = body, fmt.Errorf("push envelope: %w", err)
			return d, nil
		}
		if push.Message == nil {
			d.Data, d.Invalid = body, errors.New("push envelope: no message")
			return d, nil
		}
		d.ID = push.Message.MessageID
		if d.ID == "" {
			d.ID = push.Message.MessageIDSn
		}
		d.Data, d.Attempt = push.Message.Data, push.DeliveryAttempt
	}
	if len(body) > maxBodyBytes {
		d.Kind, d.Invalid = lifecycle.KindOversized, fmt.Errorf("message of %d bytes, over the limit of %d", len(d.Data), task.MaxEnvelopeBytes)
		return d, nil
	}
	if d.Envelope, err = task.Decode(d.Data); err != nil {
		d.Invalid = err
		if errors.Is(err, task.ErrTooLarge) {
			d.Kind = lifecycle.KindOversized
		}
	}
	return d, nil
}
