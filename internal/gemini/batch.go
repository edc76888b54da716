package gemini

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/genai"
)

// The Batch API (https://ai.google.dev/gemini-api/docs/batch-mode, read
// 2026-12-03) through genai's Batches and Files services: a batch is created
// from inline requests (a list of GenerateContentRequests, "under 20MB" in
// total) or from a JSONL file uploaded with the Files API (one
// {"key", "request"} per line); its responses come back inline, in input
// order with each request's metadata, or as a JSONL file of {"key",
// "response" | "error"} lines. The Gemini API only: genai refuses inline and
// file sources on Vertex AI.

// BatchEntry is one request of a batch: Key names it in the batch's output
// (gemq uses the task id), Raw is its REST GenerateContentRequest JSON and
// Request the same parsed.
type BatchEntry struct {
	Key     string
	Raw     json.RawMessage
	Request *Request
}

// Batch is a Batch API job as gemq follows it.
type Batch struct {
	// Name is the resource name ("batches/…"), DisplayName the name gemq
	// gave it.
	Name, DisplayName string
	// State is genai's JobState ("JOB_STATE_RUNNING", …).
	State string
	// Done is true once the batch ended: succeeded, failed, cancelled or
	// expired.
	Done bool
	// Succeeded is true when the batch ended with responses
	// (JOB_STATE_SUCCEEDED or JOB_STATE_PARTIALLY_SUCCEEDED); Results then
	// holds them by entry key.
	Succeeded bool
	// Reason says why a batch ended without responses: its state and
	// error message.
	Reason string
	// Results are the batch's answers by entry key (Succeeded only).
	Results map[string]BatchResult
	// File is true when the batch's input was an uploaded file.
	File bool
}

// BatchResult is one entry's outcome: a Response or an Error.
type BatchResult struct {
	Response *Response
	Error    *BatchError
}

// BatchError is an entry's error as the Batch API reports it
// (google.rpc.Status).
type BatchError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status,omitempty"`
}

// metadataKey is the metadata field of an inline request that carries its
// entry key (the Batch API returns each request's metadata with its
// response).
const metadataKey = "key"

// CreateBatch creates a batch of entries for model, named displayName:
// inline when the entries' requests total at most inlineLimit bytes, else
// uploaded as a JSONL file first. It returns the batch as created.
func (c *Client) CreateBatch(ctx context.Context, model, displayName string, entries []BatchEntry, inlineLimit int64) (Batch, error) {
	id, err := ModelID(model)
	if err != nil {
		return Batch{}, err
	}
	if len(entries) == 0 {
		return Batch{}, errors.New("gemini: CreateBatch: no entries")
	}
	var size int64
	for _, e := range entries {
		size += int64(len(e.Raw) + len(e.Key))
	}
	src := &genai.BatchJobSource{}
	file := size > inlineLimit
	if !file {
		for _, e := range entries {
			src.InlinedRequests = append(src.InlinedRequests, &genai.InlinedRequest{
				Model: id, Contents: e.Request.Contents, Config: e.Request.genaiConfig(),
				Metadata: map[string]string{metadataKey: e.Key},
			})
		}
	} else {
		var buf bytes.Buffer
		for _, e := range entries {
			line, err := json.Marshal(struct {
				Key     string          `json:"key"`
				Request json.RawMessage `json:"request"`
			}{e.Key, e.Raw})
			if err != nil {
				return Batch{}, fmt.Errorf("gemini: encode batch line: %w", err)
			}
			buf.Write(line)
			buf.WriteByte('\n')
		}
		f, err := c.gc.Files.Upload(ctx, &buf, &genai.UploadFileConfig{MIMEType: "jsonl", DisplayName: displayName})
		if err != nil {
			return Batch{}, fmt.Errorf("genai files upload: %w", err)
		}
		src.FileName = f.Name
	}
	b, err := c.gc.Batches.Create(ctx, id, src, &genai.CreateBatchJobConfig{DisplayName: displayName})
	if err != nil {
		return Batch{}, fmt.Errorf("genai batches create: %w", err)
	}
	out := batchOf(b)
	out.File = file
	return out, nil
}

// FindBatch looks for a batch named displayName among the project's
// batches (the Batch API takes no request id, so this is how a retried
// creation finds out whether the first one happened). found is false when
// there is none.
func (c *Client) FindBatch(ctx context.Context, displayName string) (b Batch, found bool, err error) {
	for j, err := range c.gc.Batches.All(ctx) {
		if err != nil {
			return Batch{}, false, fmt.Errorf("genai batches list: %w", err)
		}
		if j != nil && j.DisplayName == displayName {
			return batchOf(j), true, nil
		}
	}
	return Batch{}, false, nil
}

// GetBatch returns a batch's state and, once it succeeded, its results
// (downloading its responses file when it has one).
func (c *Client) GetBatch(ctx context.Context, name string) (Batch, error) {
	j, err := c.gc.Batches.Get(ctx, name, nil)
	if err != nil {
		return Batch{}, fmt.Errorf("genai batches get: %w", err)
	}
	b := batchOf(j)
	if !b.Succeeded {
		return b, nil
	}
	b.Results = map[string]BatchResult{}
	if j.Dest == nil {
		return b, nil
	}
	if j.Dest.FileName != "" {
		data, err := c.gc.Files.Download(ctx, genai.NewDownloadURIFromFile(&genai.File{DownloadURI: j.Dest.FileName}), nil)
		if err != nil {
			return Batch{}, fmt.Errorf("genai files download: %w", err)
		}
		if err := readResultLines(data, b.Results); err != nil {
			return Batch{}, err
		}
		return b, nil
	}
	for i, r := range j.Dest.InlinedResponses {
		if r == nil {
			continue
		}
		// Responses come in input order with their request's metadata
		// (the docs); the metadata's key is what maps them. One without it
		// is kept under "#<position>", which names no task: its task is
		// then answered by no result and falls back.
		key := r.Metadata[metadataKey]
		if key == "" {
			key = "#" + strconv.Itoa(i)
		}
		res := BatchResult{}
		switch {
		case r.Error != nil:
			res.Error = jobError(r.Error)
		case r.Response != nil:
			if res.Response, err = newResponse(r.Response); err != nil {
				return Batch{}, err
			}
		default:
			res.Error = &BatchError{Code: 500, Status: "INTERNAL", Message: "the batch returned neither a response nor an error for this request"}
		}
		b.Results[key] = res
	}
	return b, nil
}

// CancelBatch asks the Batch API to cancel a batch.
func (c *Client) CancelBatch(ctx context.Context, name string) error {
	if err := c.gc.Batches.Cancel(ctx, name, nil); err != nil {
		return fmt.Errorf("genai batches cancel: %w", err)
	}
	return nil
}

// readResultLines reads a responses file: {"key", "response"} or {"key",
// "error"} per line.
func readResultLines(data []byte, into map[string]BatchResult) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var l struct {
			Key      string                         `json:"key"`
			Response *genai.GenerateContentResponse `json:"response"`
			Error    *BatchError                    `json:"error"`
			Status   *BatchError                    `json:"status"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			return fmt.Errorf("gemini: batch responses file line %d: %w", n, err)
		}
		res := BatchResult{Error: l.Error}
		if res.Error == nil {
			res.Error = l.Status
		}
		if res.Error == nil && l.Response != nil {
			var err error
			if res.Response, err = newResponse(l.Response); err != nil {
				return err
			}
		}
		if res.Error == nil && res.Response == nil {
			res.Error = &BatchError{Code: 500, Status: "INTERNAL", Message: "the batch's line has neither a response nor an error"}
		}
		into[l.Key] = res
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("gemini: batch responses file: %w", err)
	}
	return nil
}

func jobError(e *genai.JobError) *BatchError {
	be := &BatchError{Code: 500, Message: e.Message}
	if e.Code != nil {
		be.Code = int(*e.Code)
	}
	return be
}

// batchOf maps genai's BatchJob.
func batchOf(j *genai.BatchJob) Batch {
	b := Batch{Name: j.Name, DisplayName: j.DisplayName, State: string(j.State)}
	switch j.State {
	case genai.JobStateSucceeded, genai.JobStatePartiallySucceeded:
		b.Done, b.Succeeded = true, true
	case genai.JobStateFailed, genai.JobStateCancelled, genai.JobStateExpired:
		b.Done = true
		b.Reason = "the batch ended " + string(j.State)
		if j.Error != nil && j.Error.Message != "" {
			b.Reason += ": " + j.Error.Message
		}
	}
	return b
}
