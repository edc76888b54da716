package geminisim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The Files API as far as the Batch API needs it: the resumable upload genai's Files.Upload speaks
// (POST /upload/v1beta/files with X-Goog-Upload-Protocol: resumable and X-Goog-Upload-Command: start,
// answered with X-Goog-Upload-URL; then chunks with X-Goog-Upload-Command: upload[, finalize] and
// X-Goog-Upload-Offset, each answered with X-Goog-Upload-Status active or final), GET/DELETE files/{id},
// GET files (pageSize default 10, at most 100), and the download of a file's bytes at
// files/{id}:download?alt=media (genai's path) or /download/v1beta/files/{id}:download (the REST docs').
// Uploaded files are kept 48 hours, as the real API keeps them
// (https://ai.google.dev/gemini-api/docs/files, read 2026-12-03); results files of batches are kept.

// maxFileBytes is the documented input file size limit of the Batch API (2 GB).
const maxFileBytes = 2 << 30

// storedFile is one file (under Server.mu).
type storedFile struct {
	id, displayName, mimeType, source string
	data                              []byte
	created, expires                  time.Time // expires zero: kept
}

// upload is a resumable upload in progress.
type upload struct {
	file *storedFile
	buf  bytes.Buffer
}

func errFileDenied(id string) apiError {
	return apiError{Code: 403, Status: "PERMISSION_DENIED", Message: fmt.Sprintf(
		"You do not have permission to access the File %s or it may not exist.", id)}
}

// storeFileLocked keeps a complete file (under s.mu).
func (s *Server) storeFileLocked(id, displayName, mimeType string, data []byte, source string, at time.Time) *storedFile {
	f := &storedFile{id: id, displayName: displayName, mimeType: mimeType, source: source, data: data, created: at}
	if source == "UPLOADED" {
		f.expires = at.Add(48 * time.Hour)
	}
	if s.batch.files == nil {
		s.batch.files = map[string]*storedFile{}
	}
	s.batch.files[id] = f
	return f
}

// fileLocked returns the live file id (a bare id or "files/ID"), or nil (under s.mu).
func (s *Server) fileLocked(id string, now time.Time) *storedFile {
	f := s.batch.files[strings.TrimPrefix(id, "files/")]
	if f == nil || (!f.expires.IsZero() && !f.expires.After(now)) {
		return nil
	}
	return f
}

// readInputFile returns the bytes of an uploaded input file, or the Files API's answer for a missing one.
func (s *Server) readInputFile(name string) ([]byte, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fileLocked(name, s.clk.Now())
	if f == nil {
		ae := errFileDenied(strings.TrimPrefix(name, "files/"))
		return nil, &ae
	}
	return f.data, nil
}

func (f *storedFile) json(base string) map[string]any {
	sum := sha256.Sum256(f.data)
	out := map[string]any{
		"name":       "files/" + f.id,
		"mimeType":   f.mimeType,
		"sizeBytes":  strconv.Itoa(len(f.data)),
		"createTime": stamp(f.created),
		"updateTime": stamp(f.created),
		"sha256Hash": base64.StdEncoding.EncodeToString(sum[:]),
		"uri":        base + "/v1beta/files/" + f.id,
		"state":      "ACTIVE",
		"source":     f.source,
	}
	if f.displayName != "" {
		out["displayName"] = f.displayName
	}
	if !f.expires.IsZero() {
		out["expirationTime"] = stamp(f.expires)
	}
	return out
}

// serveFiles answers the Files API paths (rest is the path after the version, or after "upload/" and
// "download/"); false if the path is not one of them.
func (s *Server) serveFiles(w http.ResponseWriter, r *http.Request, rest string) bool {
	e := Entry{Received: s.clk.Now()}
	base := "http://" + r.Host
	var id string
	switch {
	case strings.HasPrefix(r.URL.Path, "/upload/"):
		if rest != "v1beta/files" || r.Method != http.MethodPost {
			return false
		}
		e.Method = "files.upload"
	case strings.HasPrefix(r.URL.Path, "/download/"):
		name, ok1 := strings.CutPrefix(rest, "v1beta/files/")
		var ok2 bool
		if id, ok2 = strings.CutSuffix(name, ":download"); !ok1 || !ok2 || r.Method != http.MethodGet {
			return false
		}
		e.Method = "files.download"
	case rest == "files" && r.Method == http.MethodGet:
		e.Method = "files.list"
	default:
		name := strings.TrimPrefix(rest, "files/")
		var verb string
		id, verb, _ = strings.Cut(name, ":")
		switch {
		case verb == "download" && r.Method == http.MethodGet:
			e.Method = "files.download"
		case verb == "" && r.Method == http.MethodGet:
			e.Method = "files.get"
		case verb == "" && r.Method == http.MethodDelete:
			e.Method = "files.delete"
		default:
			return false
		}
	}
	defer func() {
		e.Finished = s.clk.Now()
		s.record(e)
	}()
	if e.Method == "files.upload" {
		// Upload errors come back with X-Goog-Upload-Status (genai retries a chunk answered without it).
		w.Header().Set("X-Goog-Upload-Status", "final")
	}
	if !s.callerError(w, r, &e) {
		return true
	}
	fail := func(outcome string, ae apiError) {
		e.Outcome, e.Status = outcome, ae.Code
		writeError(w, ae)
	}
	answer := func(v any) {
		e.Outcome, e.Status = "ok", http.StatusOK
		writeJSON(w, http.StatusOK, v)
	}
	if e.Method == "files.upload" {
		s.serveUpload(w, r, base, &e, fail, answer)
		return true
	}
	s.mu.Lock()
	now := s.clk.Now()
	if e.Method == "files.download" {
		// A file's bytes never change once stored: they are written without the lock.
		f := s.fileLocked(id, now)
		s.mu.Unlock()
		if f == nil {
			fail("not_found", errFileDenied(id))
			return true
		}
		e.Outcome, e.Status = "ok", http.StatusOK
		w.Header().Set("Content-Type", f.mimeType)
		w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(f.data)
		return true
	}
	defer s.mu.Unlock()
	if e.Method == "files.list" {
		s.listFilesLocked(r, base, now, fail, answer)
		return true
	}
	f := s.fileLocked(id, now)
	if f == nil {
		fail("not_found", errFileDenied(id))
		return true
	}
	switch e.Method {
	case "files.get":
		answer(f.json(base))
	case "files.delete":
		delete(s.batch.files, f.id)
		answer(map[string]any{})
	}
	return true
}

// serveUpload runs the resumable upload protocol.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request, base string, e *Entry, fail func(string, apiError), answer func(any)) {
	cmd := strings.ToLower(r.Header.Get("X-Goog-Upload-Command"))
	uploadID := r.URL.Query().Get("upload_id")
	if uploadID == "" {
		if !strings.EqualFold(r.Header.Get("X-Goog-Upload-Protocol"), "resumable") || cmd != "start" {
			fail("bad_request", errInvalid("geminisim supports only the resumable upload protocol (X-Goog-Upload-Protocol: resumable, X-Goog-Upload-Command: start)."))
			return
		}
		var in struct {
			File struct {
				Name        string `json:"name"`
				DisplayName string `json:"displayName"`
				MIMEType    string `json:"mimeType"`
			} `json:"file"`
		}
		if body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20)); len(bytes.TrimSpace(body)) > 0 {
			if err := json.Unmarshal(body, &in); err != nil {
				fail("bad_request", errInvalid("Invalid JSON payload received. "+err.Error()))
				return
			}
		}
		mime := r.Header.Get("X-Goog-Upload-Header-Content-Type")
		if mime == "" {
			mime = in.File.MIMEType
		}
		if mime == "" {
			mime = "application/octet-stream"
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		id := strings.TrimPrefix(in.File.Name, "files/")
		if id == "" {
			id = s.newIDLocked(12)
		} else if s.batch.files[id] != nil {
			fail("already_exists", apiError{Code: 409, Status: "ALREADY_EXISTS", Message: "File files/" + id + " already exists."})
			return
		}
		uid := s.newIDLocked(24)
		if s.batch.uploads == nil {
			s.batch.uploads = map[string]*upload{}
		}
		s.batch.uploads[uid] = &upload{file: &storedFile{id: id, displayName: in.File.DisplayName, mimeType: mime, source: "UPLOADED"}}
		w.Header().Set("X-Goog-Upload-URL", base+"/upload/v1beta/files?upload_id="+uid+"&upload_protocol=resumable")
		w.Header().Set("X-Goog-Upload-Status", "active")
		w.Header().Set("X-Goog-Upload-Chunk-Granularity", strconv.Itoa(8<<20))
		e.Outcome, e.Status = "ok", http.StatusOK
		w.WriteHeader(http.StatusOK)
		return
	}
	chunk, err := io.ReadAll(io.LimitReader(r.Body, maxFileBytes+1))
	if err != nil {
		fail("bad_request", errInvalid("Failed to read the upload body."))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	up := s.batch.uploads[uploadID]
	if up == nil {
		fail("not_found", apiError{Code: 404, Status: "NOT_FOUND", Message: "No upload with this upload_id."})
		return
	}
	if off, err := strconv.Atoi(r.Header.Get("X-Goog-Upload-Offset")); err != nil || off != up.buf.Len() {
		w.Header().Set("X-Goog-Upload-Status", "active")
		fail("bad_request", errInvalid(fmt.Sprintf("X-Goog-Upload-Offset must be %d.", up.buf.Len())))
		return
	}
	if up.buf.Len()+len(chunk) > maxFileBytes {
		delete(s.batch.uploads, uploadID)
		fail("too_large", errInvalid(fmt.Sprintf("The file exceeds the maximum size of %d bytes.", maxFileBytes)))
		return
	}
	up.buf.Write(chunk)
	switch cmd {
	case "upload":
		w.Header().Set("X-Goog-Upload-Status", "active")
		e.Outcome, e.Status = "ok", http.StatusOK
		w.WriteHeader(http.StatusOK)
	case "upload, finalize", "finalize":
		delete(s.batch.uploads, uploadID)
		f := up.file
		f = s.storeFileLocked(f.id, f.displayName, f.mimeType, bytes.Clone(up.buf.Bytes()), "UPLOADED", s.clk.Now())
		answer(map[string]any{"file": f.json(base)})
	default:
		w.Header().Set("X-Goog-Upload-Status", "active")
		fail("bad_request", errInvalid("Unknown X-Goog-Upload-Command "+strconv.Quote(cmd)+"."))
	}
}

// listFilesLocked answers GET files?pageSize=&pageToken=, newest first.
func (s *Server) listFilesLocked(r *http.Request, base string, now time.Time, fail func(string, apiError), answer func(any)) {
	var live []*storedFile
	for _, f := range s.batch.files {
		if s.fileLocked(f.id, now) != nil {
			live = append(live, f)
		}
	}
	slices.SortFunc(live, func(a, b *storedFile) int {
		if c := b.created.Compare(a.created); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	from, to, next, ok := page(r, len(live), 10, 100)
	if !ok {
		fail("bad_request", errInvalid("Invalid page_size or page_token."))
		return
	}
	files := make([]any, 0, to-from)
	for _, f := range live[from:to] {
		files = append(files, f.json(base))
	}
	out := map[string]any{"files": files}
	if next != "" {
		out["nextPageToken"] = next
	}
	answer(out)
}

// page reads pageSize and pageToken (an opaque offset) for a list of n items: the slice [from, to) and the
// next token ("" at the end); ok false when either is invalid.
func page(r *http.Request, n, defSize, maxSize int) (from, to int, next string, ok bool) {
	size := defSize
	if v := r.URL.Query().Get("pageSize"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil || k < 0 {
			return 0, 0, "", false
		}
		if k > 0 {
			size = min(k, maxSize)
		}
	}
	if tok := r.URL.Query().Get("pageToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		k, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || k < 0 || k > n {
			return 0, 0, "", false
		}
		from = k
	}
	to = min(from+size, n)
	if to < n {
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(to)))
	}
	return from, to, next, true
}
