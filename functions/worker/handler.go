package worker

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/gemq-dev/gemq/internal/lifecycle"
	"github.com/gemq-dev/gemq/internal/metrics"
)

// handler adapts HTTP to the task lifecycle: one request is one delivery.
// It is safe for concurrent use.
type handler struct {
	m   *lifecycle.Machine
	log *slog.Logger
	rec *metrics.Recorder // nil: not recorded
}

// outcomeMethodError answers a request that is not a POST.
const outcomeMethodError = "method_error"

// ServeHTTP handles one Pub/Sub push delivery or Cloud Tasks callback: 2xx
// acknowledges (the task is finished, deferred, parked or dead-lettered),
// non-2xx asks for redelivery (infrastructure down). The body is
// {"outcome": "..."}.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, outcome := http.StatusOK, ""
	if r.Method != http.MethodPost {
		status, outcome = http.StatusMethodNotAllowed, outcomeMethodError
	} else if d, err := decode(r); err != nil {
		h.log.WarnContext(r.Context(), "read request", "error", err.Error())
		status, outcome = http.StatusServiceUnavailable, lifecycle.OutRedeliver
	} else {
		o := h.m.Handle(r.Context(), d)
		h.rec.Delivery(r.Context(), o.Name)
		if outcome = o.Name; o.Redeliver {
			status = http.StatusServiceUnavailable
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"outcome\":%q}\n", outcome)
}
