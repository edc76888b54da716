package task

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
)

// RequestFingerprint identifies what a task asks Gemini: 32 hex digits of
// SHA-256 over the model and the request in the form Encode writes it
// (compact JSON, HTML characters escaped), so every copy the system makes
// of an envelope (a deferral's Cloud Task, a lease check, a parked push)
// has its first delivery's fingerprint, and a copy with another request
// does not. A request that is not valid JSON is hashed as it is.
func RequestFingerprint(model string, request json.RawMessage) string {
	canon := canonical(request)
	h := sha256.New()
	io.WriteString(h, model)
	h.Write([]byte{0})
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil)[:16])
}
