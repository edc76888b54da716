// Package batches keeps the groups of batch-tier tasks in Redis: the tasks
// of one quota scope (project and model) that the worker collects into one
// Gemini Batch API job, and that job's progress.
//
// A group's life: open (taking members) → sealed (closed: its collect
// window ended or it reached a size bound) → creating (the Batch API job
// is being created: recorded before the call, so a retried seal knows to
// look for the job first) → running (the job's name is stored; polls
// follow it) → done (every member settled). Every step is one script on the
// scope's keys, conditioned on the group's state, so each may run twice.
//
//	gemq:{<scope>}:batch:open        string: the id of the scope's open group
//	gemq:{<scope>}:batch:members     hash: "<job>/<task>" → "<group> <deferral>": which group holds a
//	                                 task, and the deferral number its waiting mark names
//	gemq:{<scope>}:batch:g:<id>      hash: state, entries, bytes, tokens, opened_ms, batch, file,
//	                                 creates, polls, passes, waits
//	gemq:{<scope>}:batch:g:<id>:m    list: the members (JSON), in the order they are sent
//
// The keys start with the scope's limiter prefix (limiter.Scope.KeyPrefix),
// so they share its hash slot. Group ids come from NewID: [a-z0-9-] only.
// A Store is safe for concurrent use.
package batches

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/limiter"
)

// State is a group's state.
type State string

// The group states.
const (
	Open     State = "open"
	Sealed   State = "sealed"
	Creating State = "creating"
	Running  State = "running"
	Done     State = "done"
)

// ErrNotFound is returned for a group the store does not have.
var ErrNotFound = errors.New("batches: group not found")

// Member is one task of a group.
type Member struct {
	JobID  string `json:"job"`
	TaskID string `json:"task"`
	// Deferral is the deferral number of the task's waiting mark while it
	// is batched: whoever settles it leases it with this number.
	Deferral int `json:"n"`
	// Tokens is the task's estimated input tokens.
	Tokens int64 `json:"tokens"`
	// Envelope is the task's envelope (task.Encode), permit-free.
	Envelope json.RawMessage `json:"env"`
}

func (m Member) field() string { return m.JobID + "/" + m.TaskID }

// Group is a group's record.
type Group struct {
	ID       string
	State    State
	Entries  int
	Bytes    int64
	Tokens   int64
	OpenedAt time.Time
	// Batch is the Batch API job's name (Running and Done), File whether
	// its input was an uploaded file.
	Batch string
	File  bool
	// Creates, Polls, Passes and Waits count the creation attempts, the
	// polls scheduled, the settle passes and the seals that waited for the
	// enqueued-token limit: they number names and fence passes.
	Creates, Polls, Passes, Waits int
}

// Bounds close a group: it is sealed at once when it reaches any of them.
type Bounds struct {
	MaxEntries int64
	MaxBytes   int64
	MaxTokens  int64
}

// Store keeps groups in Redis.
type Store struct {
	rdb redis.Scripter
	ttl time.Duration
}

// New returns a Store on rdb; ttl is how long a group's keys live after
// their last write (longer than a batch may run).
func New(rdb redis.Scripter, ttl time.Duration) *Store {
	return &Store{rdb: rdb, ttl: ttl}
}

// NewID returns a new group id: "gemq-batch-" and 20 hex digits. It is
// also the Batch API job's display name.
func NewID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "gemq-batch-" + hex.EncodeToString(b[:])
}

func prefix(s limiter.Scope) string              { return s.KeyPrefix() + ":batch:" }
func openKey(s limiter.Scope) string             { return prefix(s) + "open" }
func membersKey(s limiter.Scope) string          { return prefix(s) + "members" }
func groupKey(s limiter.Scope, id string) string { return prefix(s) + "g:" + id }
func listKey(s limiter.Scope, id string) string  { return prefix(s) + "g:" + id + ":m" }

// AddResult is Add's answer.
type AddResult struct {
	// Group is the group holding the task; Deferral the deferral number of
	// its membership (the one asked for, or an earlier membership's).
	Group    string
	Deferral int
	// Existing is true when the task was a member already (an earlier
	// delivery added it): nothing was written.
	Existing bool
	// First is true when the task opened the group: the caller schedules
	// its seal at OpenedAt + the collect window.
	First    bool
	OpenedAt time.Time
	// Full is true when the group reached a bound with this task: it is
	// closed to new members and the caller seals it at once.
	Full bool
	// Closed names another group this call closed because the task did
	// not fit in it ("" if none): the caller seals it at once too.
	Closed string
}

// addScript adds a task to the scope's open group, or opens one.
//
//	KEYS[1] -> gemq:{<scope>}:batch:open
//	KEYS[2] -> gemq:{<scope>}:batch:members
//	KEYS[3] -> gemq:{<scope>}:batch:g:<id>
//	KEYS[4] -> gemq:{<scope>}:batch:g:<id>:m
//	ARGV[1] -> ttl in ms
//	ARGV[2] -> group id: the open group's, or a new one to open
//	ARGV[3] -> member field "<job>/<task>"
//	ARGV[4] -> deferral number
//	ARGV[5] -> member JSON
//	ARGV[6], ARGV[7] -> the member's bytes, tokens
//	ARGV[8..10] -> max entries, bytes, tokens
//	Output: {code, group, deferral, opened_ms, entries after}
//	code: 1 added, 2 added and the group is full (closed), 3 already a member of group (deferral),
//	4 another group is open: call again with that id (group; '' for a new one),
//	5 the task did not fit: group closed, call again with a new id
var addScript = redis.NewScript(`
local m = redis.call('HGET', KEYS[2], ARGV[3])
if m then
  local g, n = string.match(m, '^(%S+) (%d+)$')
  return {3, g, n, '0', 0}
end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[2] then return {4, cur, '0', '0', 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not cur then
  -- A new group: the id must be fresh (an old group's id is never reused).
  if redis.call('EXISTS', KEYS[3]) == 1 then return {4, '', '0', '0', 0} end
  redis.call('HSET', KEYS[3], 'state', 'open', 'opened_ms', tostring(now), 'entries', '0', 'bytes', '0', 'tokens', '0')
  redis.call('SET', KEYS[1], ARGV[2])
end
local g = redis.call('HMGET', KEYS[3], 'state', 'entries', 'bytes', 'tokens', 'opened_ms')
if g[1] ~= 'open' then
  redis.call('DEL', KEYS[1])
  return {4, '', '0', '0', 0}
end
local entries = tonumber(g[2]) + 1
local bytes = tonumber(g[3]) + tonumber(ARGV[6])
local tokens = tonumber(g[4]) + tonumber(ARGV[7])
if entries > 1 and (bytes > tonumber(ARGV[9]) or tokens > tonumber(ARGV[10])) then
  redis.call('DEL', KEYS[1])
  return {5, ARGV[2], '0', g[5], 0}
end
redis.call('RPUSH', KEYS[4], ARGV[5])
redis.call('HSET', KEYS[3], 'entries', tostring(entries), 'bytes', tostring(bytes), 'tokens', tostring(tokens))
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2] .. ' ' .. ARGV[4])
local code = 1
if entries >= tonumber(ARGV[8]) or bytes >= tonumber(ARGV[9]) or tokens >= tonumber(ARGV[10]) then
  redis.call('DEL', KEYS[1])
  code = 2
end
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
if code == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {code, ARGV[2], ARGV[4], g[5], entries}
`)

// Add records m in scope's open group (opening one if none is open), once
// per task: a task that is a member already is answered with its
// membership (Existing). Write-ahead: call it before the task's waiting
// mark and before the group's seal is scheduled.
func (s *Store) Add(ctx context.Context, scope limiter.Scope, m Member, b Bounds, openHint string) (AddResult, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return AddResult{}, fmt.Errorf("batches: encode member: %w", err)
	}
	id := openHint
	if id == "" {
		id = NewID()
	}
	var res AddResult
	for try := 0; try < 8; try++ {
		keys := []string{openKey(scope), membersKey(scope), groupKey(scope, id), listKey(scope, id)}
		vals, err := addScript.Run(ctx, s.rdb, keys, s.ttl.Milliseconds(), id, m.field(), m.Deferral, raw,
			len(m.Envelope), m.Tokens, b.MaxEntries, b.MaxBytes, b.MaxTokens).Slice()
		if err != nil {
			return AddResult{}, fmt.Errorf("batches: add script: %w", err)
		}
		if len(vals) != 5 {
			return AddResult{}, fmt.Errorf("batches: add script: unexpected result %v", vals)
		}
		code, _ := vals[0].(int64)
		group, _ := vals[1].(string)
		n, _ := strconv.Atoi(fmt.Sprint(vals[2]))
		opened, _ := strconv.ParseInt(fmt.Sprint(vals[3]), 10, 64)
		switch code {
		case 1, 2:
			res.Group, res.Deferral, res.Full = group, n, code == 2
			res.OpenedAt = time.UnixMilli(opened)
			entries, _ := vals[4].(int64)
			res.First = entries == 1
			return res, nil
		case 3:
			res.Group, res.Deferral, res.Existing = group, n, true
			return res, nil
		case 4:
			if id = group; id == "" {
				id = NewID()
			}
		case 5:
			res.Closed = group
			id = NewID()
		default:
			return AddResult{}, fmt.Errorf("batches: add script: unexpected code %d", code)
		}
	}
	return AddResult{}, errors.New("batches: add: the open group kept changing")
}

// groupScript reads, and optionally moves, a group.
//
//	KEYS[1] -> gemq:{<scope>}:batch:open
//	KEYS[2] -> gemq:{<scope>}:batch:g:<id>
//	ARGV[1] -> group id
//	ARGV[2] -> op: 'get' | 'seal' | 'creating' | 'running' | 'count'
//	ARGV[3] -> running: the batch name; count: the counter field
//	ARGV[4] -> running: '1' when its input was a file
//	ARGV[5] -> ttl in ms
//	Output: the group hash as {field, value, …}; empty when there is none
//
// seal: open → sealed (and the open pointer cleared if it is this group);
// creating: sealed or creating → creating, creates + 1; running: creating →
// running with the batch name; count: one more of a counter. A group in
// another state is returned unchanged.
var groupScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
local op = ARGV[2]
local state = redis.call('HGET', KEYS[2], 'state')
local wrote = false
if op == 'seal' and state == 'open' then
  redis.call('HSET', KEYS[2], 'state', 'sealed')
  if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
  wrote = true
elseif op == 'creating' and (state == 'sealed' or state == 'creating') then
  redis.call('HSET', KEYS[2], 'state', 'creating')
  redis.call('HINCRBY', KEYS[2], 'creates', 1)
  wrote = true
elseif op == 'running' and state == 'creating' then
  redis.call('HSET', KEYS[2], 'state', 'running', 'batch', ARGV[3], 'file', ARGV[4])
  wrote = true
elseif op == 'count' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  wrote = true
end
if wrote then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return redis.call('HGETALL', KEYS[2])
`)

func (s *Store) group(ctx context.Context, scope limiter.Scope, id, op string, args ...any) (Group, error) {
	a := []any{id, op, "", "0", s.ttl.Milliseconds()}
	for i, v := range args {
		a[2+i] = v
	}
	vals, err := groupScript.Run(ctx, s.rdb, []string{openKey(scope), groupKey(scope, id)}, a...).StringSlice()
	if err != nil {
		return Group{}, fmt.Errorf("batches: group %s script: %w", op, err)
	}
	if len(vals) == 0 {
		return Group{}, ErrNotFound
	}
	f := make(map[string]string, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		f[vals[i]] = vals[i+1]
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	return Group{ID: id, State: State(f["state"]), Entries: int(n("entries")), Bytes: n("bytes"), Tokens: n("tokens"),
		OpenedAt: time.UnixMilli(n("opened_ms")), Batch: f["batch"], File: f["file"] == "1",
		Creates: int(n("creates")), Polls: int(n("polls")), Passes: int(n("passes")), Waits: int(n("waits"))}, nil
}

// Get returns a group, or ErrNotFound.
func (s *Store) Get(ctx context.Context, scope limiter.Scope, id string) (Group, error) {
	return s.group(ctx, scope, id, "get")
}

// Seal closes an open group to new members and returns it (a group past
// open is returned as it is).
func (s *Store) Seal(ctx context.Context, scope limiter.Scope, id string) (Group, error) {
	return s.group(ctx, scope, id, "seal")
}

// MarkCreating records, before the Batch API is asked to create the
// group's job, that it is being created, and returns the group: Creates > 1
// means an earlier attempt may have created it.
func (s *Store) MarkCreating(ctx context.Context, scope limiter.Scope, id string) (Group, error) {
	return s.group(ctx, scope, id, "creating")
}

// MarkRunning stores the created job's name.
func (s *Store) MarkRunning(ctx context.Context, scope limiter.Scope, id, batch string, file bool) (Group, error) {
	f := "0"
	if file {
		f = "1"
	}
	return s.group(ctx, scope, id, "running", batch, f)
}

// The counters of Count.
const (
	CountPolls  = "polls"
	CountPasses = "passes"
	CountWaits  = "waits"
)

// Count adds one to a counter of the group (CountPolls, CountPasses,
// CountWaits) and returns the group.
func (s *Store) Count(ctx context.Context, scope limiter.Scope, id, counter string) (Group, error) {
	return s.group(ctx, scope, id, "count", counter)
}

// membersScript:
//
//	KEYS[1] -> gemq:{<scope>}:batch:g:<id>:m
//	Output: the members' JSON in order
var membersScript = redis.NewScript(`return redis.call('LRANGE', KEYS[1], 0, -1)`)

// Members returns a group's members in the order they are sent.
func (s *Store) Members(ctx context.Context, scope limiter.Scope, id string) ([]Member, error) {
	vals, err := membersScript.Run(ctx, s.rdb, []string{listKey(scope, id)}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("batches: members script: %w", err)
	}
	out := make([]Member, 0, len(vals))
	for _, v := range vals {
		var m Member
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return nil, fmt.Errorf("batches: decode member: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

// doneScript ends a group: state done, its members' index entries and
// their envelopes removed (the group's record stays for its TTL, so a late
// poll finds it done).
//
//	KEYS[1] -> gemq:{<scope>}:batch:members
//	KEYS[2] -> gemq:{<scope>}:batch:g:<id>
//	KEYS[3] -> gemq:{<scope>}:batch:g:<id>:m
//	ARGV[1] -> group id
//	Output: 1 ended now or before, 0 no such group
var doneScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
for _, raw in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local m = cjson.decode(raw)
  local f = m['job'] .. '/' .. m['task']
  local cur = redis.call('HGET', KEYS[1], f)
  if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then redis.call('HDEL', KEYS[1], f) end
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[2], 'state', 'done')
return 1
`)

// Finish ends a group once every member is settled.
func (s *Store) Finish(ctx context.Context, scope limiter.Scope, id string) error {
	keys := []string{membersKey(scope), groupKey(scope, id), listKey(scope, id)}
	if err := doneScript.Run(ctx, s.rdb, keys, id).Err(); err != nil {
		return fmt.Errorf("batches: done script: %w", err)
	}
	return nil
}
