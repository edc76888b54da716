package tasksemu

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/genproto/googleapis/rpc/code"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// attempt is everything one dispatch needs, copied out of the task under the lock.
type attempt struct {
	q        *queue
	t        *task
	queue    string
	name     string
	no       int // 1-based dispatch count
	forced   bool
	sched    time.Time
	start    time.Time
	deadline time.Duration
	method   string
	url      string
	headers  map[string]string
	body     []byte
	oidc     *cloudtaskspb.OidcToken
	oauth    bool
	execs    int
	prevCode int
}

// loop dispatches q's tasks when due, within the rate limits, until the queue is
// deleted or the server stops. One goroutine per queue.
func (s *Server) loop(q *queue) {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.stopped || s.queues[q.pb.Name] != q {
			s.mu.Unlock()
			return
		}
		now := time.Now()
		t, wait := s.nextLocked(q, now)
		var a *attempt
		if t != nil {
			a = s.beginLocked(q, t, now, false)
		}
		s.mu.Unlock()
		if a != nil {
			go s.send(a)
			continue
		}
		var tick <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-q.wake:
		case <-tick:
		case <-q.done:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// nextLocked pops the next task that may be dispatched now. Otherwise it returns how
// long to wait before looking again (0: until something changes).
func (s *Server) nextLocked(q *queue, now time.Time) (*task, time.Duration) {
	if q.pb.State != cloudtaskspb.Queue_RUNNING || len(q.pending) == 0 {
		return nil, 0
	}
	t := q.pending[0]
	if now.Before(t.sched) {
		return nil, max(t.sched.Sub(now), time.Microsecond)
	}
	rl := q.pb.RateLimits
	if q.running >= int(rl.MaxConcurrentDispatches) {
		return nil, 0
	}
	rate := rl.MaxDispatchesPerSecond
	q.tokens = min(float64(rl.MaxBurstSize), q.tokens+now.Sub(q.refill).Seconds()*rate)
	q.refill = now
	if q.tokens < 1 {
		return nil, time.Duration((1-q.tokens)/rate*float64(time.Second)) + time.Microsecond
	}
	q.tokens--
	heap.Pop(&q.pending)
	return t, 0
}

// beginLocked records the start of an attempt on t and returns what send needs.
// It must be called with s.mu held and the server not stopped.
func (s *Server) beginLocked(q *queue, t *task, now time.Time, forced bool) *attempt {
	q.running++
	t.inflight++
	pb := t.pb
	pb.DispatchCount++
	at := &cloudtaskspb.Attempt{ScheduleTime: timestamp(t.sched), DispatchTime: timestamp(now.Truncate(time.Microsecond))}
	if t.firstTry.IsZero() {
		t.firstTry = now
		pb.FirstAttempt = &cloudtaskspb.Attempt{DispatchTime: at.DispatchTime}
	}
	pb.LastAttempt = at
	hr := pb.GetHttpRequest()
	a := &attempt{
		q: q, t: t,
		queue:    q.pb.Name,
		name:     pb.Name,
		no:       int(pb.DispatchCount),
		forced:   forced,
		sched:    t.sched,
		start:    now,
		deadline: dur(pb.DispatchDeadline),
		method:   hr.GetHttpMethod().String(),
		url:      hr.GetUrl(),
		headers:  hr.GetHeaders(), // never mutated after creation
		body:     hr.GetBody(),
		oidc:     hr.GetOidcToken(),
		oauth:    hr.GetOauthToken() != nil,
		execs:    t.execs,
		prevCode: t.prevCode,
	}
	s.wg.Add(1)
	return a
}

// Headers the service computes itself; a task's own values for them are dropped.
func reservedHeader(k string) bool {
	k = http.CanonicalHeaderKey(k)
	return k == "Host" || k == "Content-Length" || k == "User-Agent" ||
		strings.HasPrefix(k, "X-Google-") || strings.HasPrefix(k, "X-Appengine-") || strings.HasPrefix(k, "X-Cloudtasks-")
}

// send performs one HTTP attempt and hands the outcome to finish.
func (s *Server) send(a *attempt) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, a.deadline)
	defer cancel()
	code, retryAfter, errText := s.do(ctx, a)
	s.finish(a, code, retryAfter, errText, time.Now())
}

func (s *Server) do(ctx context.Context, a *attempt) (code int, retryAfter time.Duration, errText string) {
	req, err := http.NewRequestWithContext(ctx, a.method, a.url, bytes.NewReader(a.body))
	if err != nil {
		return 0, 0, fmt.Sprintf("build request: %v", err)
	}
	if len(a.body) == 0 {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range a.headers {
		if !reservedHeader(k) {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("User-Agent", "Google-Cloud-Tasks")
	req.Header.Set("X-CloudTasks-QueueName", lastSegment(a.queue))
	req.Header.Set("X-CloudTasks-TaskName", lastSegment(a.name))
	req.Header.Set("X-CloudTasks-TaskRetryCount", strconv.Itoa(a.no-1))
	req.Header.Set("X-CloudTasks-TaskExecutionCount", strconv.Itoa(a.execs))
	req.Header.Set("X-CloudTasks-TaskETA", fmt.Sprintf("%d.%06d", a.sched.Unix(), a.sched.Nanosecond()/1000))
	if a.prevCode != 0 {
		req.Header.Set("X-CloudTasks-TaskPreviousResponse", strconv.Itoa(a.prevCode))
	}
	switch {
	case a.oidc != nil:
		aud := a.oidc.GetAudience()
		if aud == "" {
			aud = a.url
		}
		tok, err := s.signOIDC(a.oidc.GetServiceAccountEmail(), aud, time.Now())
		if err != nil {
			return 0, 0, fmt.Sprintf("sign OIDC token: %v", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case a.oauth:
		req.Header.Set("Authorization", "Bearer tasksemu-local-oauth-token")
	}
	resp, err := s.httpc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, 0, "DEADLINE_EXCEEDED"
		}
		return 0, 0, err.Error()
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil && ctx.Err() != nil {
		return 0, 0, "DEADLINE_EXCEEDED" // the response body outlived the deadline
	}
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), ""
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n > 0 && n < 1e9 {
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// finish records an attempt and completes, retries or drops the task.
func (s *Server) finish(a *attempt, httpCode int, retryAfter time.Duration, errText string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.record(Dispatch{
		Queue: a.queue, Task: a.name, Attempt: a.no, ScheduleTime: a.sched, DispatchTime: a.start,
		ResponseTime: now, StatusCode: httpCode, Err: errText, Forced: a.forced,
	})
	s.log.Debug("tasksemu: dispatched", "task", a.name, "attempt", a.no, "status", httpCode, "error", errText)
	q, t := a.q, a.t
	q.running--
	t.inflight--
	q.poke()
	if s.stopped || s.queues[q.pb.Name] != q || q.tasks[t.pb.Name] != t {
		return // queue deleted, task deleted or purged meanwhile
	}
	pb := t.pb
	if pb.LastAttempt != nil && pb.DispatchCount == int32(a.no) {
		pb.LastAttempt.ResponseTime = timestamp(now.Truncate(time.Microsecond))
		pb.LastAttempt.ResponseStatus = attemptStatus(httpCode, errText)
	}
	if httpCode != 0 {
		pb.ResponseCount++
	}
	if httpCode >= 200 && httpCode < 300 {
		s.stats.Succeeded++
		s.forget(q, t, now)
		return
	}
	if httpCode != 0 && httpCode < 500 {
		t.execs++
	}
	t.prevCode = httpCode
	if t.index >= 0 {
		return // already rescheduled by another attempt (RunTask while running)
	}
	rc := effectiveRetry(q.pb.RetryConfig, pb.RetryConfig)
	if exhausted(rc, int(pb.DispatchCount), now.Sub(t.firstTry)) {
		s.log.Debug("tasksemu: retries exhausted, task deleted", "task", a.name, "attempts", pb.DispatchCount)
		s.stats.Exhausted++
		s.forget(q, t, now)
		return
	}
	delay := backoff(rc, int(pb.DispatchCount))
	if (httpCode == http.StatusTooManyRequests || httpCode == http.StatusServiceUnavailable) && retryAfter > delay {
		delay = retryAfter
	}
	q.schedule(t, ceilMicro(now.Add(delay)))
}

// effectiveRetry overlays the fields a task-level retry_config sets on the queue's.
func effectiveRetry(queue, task *cloudtaskspb.RetryConfig) *cloudtaskspb.RetryConfig {
	if task == nil {
		return queue
	}
	rc := proto.Clone(queue).(*cloudtaskspb.RetryConfig)
	if task.MaxAttempts != 0 {
		rc.MaxAttempts = task.MaxAttempts
	}
	if task.MaxDoublings != 0 {
		rc.MaxDoublings = task.MaxDoublings
	}
	if task.MinBackoff != nil {
		rc.MinBackoff = task.MinBackoff
	}
	if task.MaxBackoff != nil {
		rc.MaxBackoff = task.MaxBackoff
	}
	if task.MaxRetryDuration != nil {
		rc.MaxRetryDuration = task.MaxRetryDuration
	}
	return rc
}

// exhausted applies the service's rule: stop only when both max_attempts and
// max_retry_duration are satisfied (-1 attempts and 0 duration mean unlimited; both
// unlimited retries forever).
func exhausted(rc *cloudtaskspb.RetryConfig, attempts int, sinceFirst time.Duration) bool {
	maxAttempts, maxDur := int(rc.GetMaxAttempts()), dur(rc.GetMaxRetryDuration())
	if maxAttempts < 0 && maxDur == 0 {
		return false
	}
	return (maxAttempts < 0 || attempts >= maxAttempts) && (maxDur == 0 || sinceFirst >= maxDur)
}

// backoff is the delay before retry number k (k = attempts made so far, from 1):
// min_backoff doubled max_doublings times, then growing linearly by that last
// doubled interval, capped at max_backoff.
func backoff(rc *cloudtaskspb.RetryConfig, k int) time.Duration {
	minB, maxB, d := float64(dur(rc.GetMinBackoff())), float64(dur(rc.GetMaxBackoff())), int(rc.GetMaxDoublings())
	var iv float64
	if k-1 <= d {
		iv = minB * math.Pow(2, float64(k-1))
	} else {
		base := minB * math.Pow(2, float64(d))
		iv = base + float64(k-1-d)*base
	}
	if iv > maxB || math.IsInf(iv, 0) || math.IsNaN(iv) {
		iv = maxB
	}
	return time.Duration(iv)
}

// attemptStatus maps an attempt's outcome to the google.rpc.Status the API reports.
func attemptStatus(httpCode int, errText string) *spb.Status {
	if httpCode == 0 {
		if errText == "DEADLINE_EXCEEDED" {
			return &spb.Status{Code: int32(code.Code_DEADLINE_EXCEEDED), Message: "dispatch deadline exceeded"}
		}
		return &spb.Status{Code: int32(code.Code_UNAVAILABLE), Message: errText}
	}
	c := code.Code_UNKNOWN
	switch {
	case httpCode >= 200 && httpCode < 300:
		c = code.Code_OK
	case httpCode == 400:
		c = code.Code_INVALID_ARGUMENT
	case httpCode == 401:
		c = code.Code_UNAUTHENTICATED
	case httpCode == 403:
		c = code.Code_PERMISSION_DENIED
	case httpCode == 404:
		c = code.Code_NOT_FOUND
	case httpCode == 409:
		c = code.Code_ABORTED
	case httpCode == 429:
		c = code.Code_RESOURCE_EXHAUSTED
	case httpCode == 499:
		c = code.Code_CANCELLED
	case httpCode == 501:
		c = code.Code_UNIMPLEMENTED
	case httpCode == 503:
		c = code.Code_UNAVAILABLE
	case httpCode == 504:
		c = code.Code_DEADLINE_EXCEEDED
	case httpCode >= 500:
		c = code.Code_INTERNAL
	case httpCode >= 400:
		c = code.Code_FAILED_PRECONDITION
	}
	return &spb.Status{Code: int32(c), Message: http.StatusText(httpCode)}
}
