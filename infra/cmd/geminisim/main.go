// Command geminisim runs the Gemini API stand-in (package infra/geminisim) as a standalone server.
//
//	go run ./infra/cmd/geminisim --addr 127.0.0.1:8090 --rpm 60 --tpm 100000 --rpd 1000 \
//	    --latency lognormal:median=1.5s,sigma=0.5,max=20s --faults 503=0.01,hang=0.001
//
// Point genai at it with GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8090 and any GEMINI_API_KEY (or the one given
// with --api-key). GET /_stats returns the recorder's statistics as JSON, GET /_log every request, POST
// /_reset clears both, the quota windows, batches and files. The --batch-* flags shape the Batch API
// (durations in stand-in time, scaled by --minute).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "geminisim:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("geminisim", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "host:port to listen on")
	apiKey := fs.String("api-key", "", "the only valid API key (empty: any non-empty key)")
	models := fs.String("models", strings.Join(geminisim.DefaultModelIDs, ","), "comma-separated model ids served")
	noQuota := fs.String("no-quota-models", "", "comma-separated model ids with quota limit 0 (every call 429s)")
	rpm := fs.Int64("rpm", 0, "requests per minute per model (0: unlimited)")
	tpm := fs.Int64("tpm", 0, "input tokens per minute per model (0: unlimited)")
	rpd := fs.Int64("rpd", 0, "requests per Pacific day per model (0: unlimited)")
	inputLimit := fs.Int64("input-token-limit", 1048576, "model input token limit (longer prompts get 400)")
	freeTier := fs.Bool("free-tier", false, "name quota ids and metrics as the free tier does")
	minute := fs.Duration("minute", time.Minute, "real length of a quota minute (time scaling), e.g. 2s")
	latency := fs.String("latency", "", "latency: fixed:800ms | uniform:200ms,2s | lognormal:median=1.5s,sigma=0.5[,max=20s]")
	faults := fs.String("faults", "", "fault rates: 500=0.01,503=0.01,504=0.005,hang=0.001,reset=0.001")
	capacity := fs.Float64("capacity-rate", 0, "probability of a 429 without details")
	flexShed := fs.Float64("flex-shed-rate", 0, "probability that a flex request is shed (503 UNAVAILABLE, not charged)")
	priorityRPM := fs.Int64("priority-rpm", 0, "priority requests per minute and model served at priority; beyond it, served at standard (0: no limit)")
	skew := fs.Float64("token-skew", 0, "random ± fraction applied to each request's token count, e.g. 0.3")
	seed := fs.Uint64("seed", 0, "random seed (0: fixed default)")
	tokenizer := fs.String("tokenizer", string(geminisim.IndependentTokens), "token counting: independent (the stand-in's own rule) | estimator (exactly gemq's estimate)")
	batchPending := fs.Duration("batch-pending", 30*time.Second, "Batch API: stand-in time a new batch stays PENDING")
	batchRun := fs.Duration("batch-run", 2*time.Minute, "Batch API: stand-in time a batch then runs before it ends")
	batchPerEntry := fs.Duration("batch-per-entry", 0, "Batch API: running time added per entry")
	batchExpire := fs.Duration("batch-expire-after", 48*time.Hour, "Batch API: a batch not ended this long after creation ends EXPIRED with no results")
	batchFailure := fs.Float64("batch-failure-rate", 0, "Batch API: probability that an entry is answered with an error status (code 13)")
	batchWhole := fs.Float64("batch-whole-failure-rate", 0, "Batch API: probability that a whole batch ends FAILED with no results")
	batchTokens := fs.Int64("batch-enqueued-tokens", 0, "Batch API: per-model limit on the input tokens of pending and running batches (0: none)")
	batchTier1 := fs.Bool("batch-tier1-limits", false, "Batch API: enqueued-token limits of Tier 1 (the documented figures) for the default models")
	dsqSpec := fs.String("dsq", "", "hidden capacity as Vertex AI's Dynamic Shared Quota: REQUESTS/WINDOW[;AFTER=FRACTION...], e.g. 60/10s;1m=0.4;2m=1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok, ok := geminisim.ParseTokenizer(*tokenizer)
	if !ok {
		return fmt.Errorf("-tokenizer %q: want independent or estimator", *tokenizer)
	}
	dsq, err := geminisim.ParseDSQ(*dsqSpec)
	if err != nil {
		return err
	}
	lat, err := geminisim.ParseLatency(*latency)
	if err != nil {
		return err
	}
	f, err := parseFaults(*faults)
	if err != nil {
		return err
	}
	zero := map[string]bool{}
	for _, id := range splitList(*noQuota) {
		zero[id] = true
	}
	var ms []geminisim.Model
	for _, id := range splitList(*models) {
		ms = append(ms, geminisim.Model{ID: id, Limits: geminisim.Limits{RPM: *rpm, TPM: *tpm, RPD: *rpd},
			NoQuota: zero[id], InputTokenLimit: *inputLimit})
		delete(zero, id)
	}
	for id := range zero {
		ms = append(ms, geminisim.Model{ID: id, NoQuota: true, InputTokenLimit: *inputLimit})
	}
	for name, p := range map[string]float64{"batch-failure-rate": *batchFailure, "batch-whole-failure-rate": *batchWhole} {
		if p < 0 || p > 1 {
			return fmt.Errorf("-%s %g: want a probability in [0, 1]", name, p)
		}
	}
	batch := geminisim.Batch{PendingFor: *batchPending, RunFor: *batchRun, PerEntry: *batchPerEntry,
		ExpireAfter: *batchExpire, FailureRate: *batchFailure, BatchFailureRate: *batchWhole, EnqueuedTokens: *batchTokens}
	if *batchTier1 {
		batch.EnqueuedTokensByModel = geminisim.Tier1EnqueuedTokens
	}
	srv := geminisim.New(geminisim.Options{
		APIKey: *apiKey, Models: ms, FreeTier: *freeTier, Minute: *minute, Latency: lat, Faults: f,
		CapacityRate: *capacity, TokenSkew: *skew, Seed: *seed, Tokenizer: tok, DSQ: dsq,
		Tiers: geminisim.Tiers{FlexShedRate: *flexShed, PriorityRPM: *priorityRPM},
		Batch: batch,
	})
	url, err := srv.Listen(*addr)
	if err != nil {
		return err
	}
	fmt.Printf("geminisim listening on %s\nexport GOOGLE_GEMINI_BASE_URL=%s\n", url, url)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	if err := srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseFaults(s string) (geminisim.Faults, error) {
	var f geminisim.Faults
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		p, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || p < 0 || p > 1 {
			return f, fmt.Errorf("faults: %q is not name=probability", kv)
		}
		switch k {
		case "500":
			f.Error500 = p
		case "503":
			f.Error503 = p
		case "504":
			f.Error504 = p
		case "hang":
			f.Hang = p
		case "reset":
			f.Reset = p
		default:
			return f, fmt.Errorf("faults: unknown fault %q (500, 503, 504, hang, reset)", k)
		}
	}
	if f.Error500+f.Error503+f.Error504+f.Hang+f.Reset > 1 {
		return f, errors.New("faults: rates add up to more than 1")
	}
	return f, nil
}
