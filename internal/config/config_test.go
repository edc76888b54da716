package config

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/gemq-dev/gemq/internal/tier"
)

const quotas = `{"scopes":[
 {"project":"*","model":"gemini-2.5-flash","dimensions":[{"name":"rpm","unit":"requests","limit":1000,"period":"1m"}]},
 {"project":"*","model":"gemini-2.5-pro","dimensions":[{"name":"rpm","unit":"requests","limit":150,"period":"1m"}]}]}`

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func base(kv ...string) map[string]string {
	m := map[string]string{
		"REDIS_ADDR":           "10.0.0.3:6379",
		"GOOGLE_CLOUD_PROJECT": "proj",
		"GEMQ_QUOTAS":          quotas,
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(base()))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		RedisAddr:       "10.0.0.3:6379",
		Project:         "proj",
		TasksTopic:      "gemq-tasks",
		ResultsTopic:    "gemq-results",
		DeadLetterTopic: "gemq-dead-letter",
		Quotas:          c.Quotas,
		AllowedModels:   []string{"gemini-2.5-flash", "gemini-2.5-pro"},
		Location:        "us-central1",
		GeminiTimeout:   120 * time.Second,
		FlexTimeout:     DefaultFlexTimeout,
		Prices:          DefaultPrices,
		Lease:           180 * time.Second,
		ResultTTL:       168 * time.Hour,
		ResultsPrefix:   "results/", ResultsDatetimeFormat: "YYYY-MM-DD/hh_mm_ssZ",
		ResultsMaxDuration: 5 * time.Minute, ResultBodyGrace: 15 * time.Minute,
		MaxAttempts:    5,
		TokenEstimator: EstimateLocal,
		LimitPolicy:    PolicyReserve,
		MaxBodyBytes:   32 << 20,
		LogLevel:       slog.LevelInfo,

		RetryBase:           10 * time.Second,
		RetryMax:            10 * time.Minute,
		CapacityBackoffBase: 5 * time.Second,
		CapacityBackoffMax:  5 * time.Minute,
		ClaimLead:           3 * time.Second,
		SeedBackoffBase:     time.Second,
		SeedBackoffMax:      time.Minute,
		MetricsEndpoint:     "telemetry.googleapis.com:443",
		MetricsInterval:     time.Minute,
		Batch: Batch{Collect: time.Minute, PollMin: 30 * time.Second, PollMax: 10 * time.Minute, MaxEntries: 10_000,
			MaxBytes: 64 << 20, InlineBytes: 19_000_000, EnqueuedTokens: 3_000_000},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	if len(c.Quotas.Scopes) != 2 {
		t.Errorf("quotas not parsed: %+v", c.Quotas)
	}
	if err := c.ValidateFor(Ingest); err != nil {
		t.Errorf("ValidateFor(Ingest) = %v", err)
	}
}

func TestLoadAll(t *testing.T) {
	dir := t.TempDir()
	qf := filepath.Join(dir, "q.json")
	if err := os.WriteFile(qf, []byte(quotas), 0o600); err != nil {
		t.Fatal(err)
	}
	m := base(
		"GEMQ_QUOTAS", "",
		"GEMQ_QUOTAS_FILE", qf,
		"REDIS_PASSWORD", "pw",
		"GEMQ_TASKS_TOPIC", "t",
		"GEMQ_RESULTS_TOPIC", "r",
		"GEMQ_TASKS_QUEUE", "projects/proj/locations/us-central1/queues/gemq",
		"GEMQ_WORKER_URL", "https://worker-abc.a.run.app/",
		"GEMQ_TASKS_SERVICE_ACCOUNT", "tasks@proj.iam.gserviceaccount.com",
		"GEMQ_CLOUDTASKS_ENDPOINT", "127.0.0.1:8123",
		"PUBSUB_EMULATOR_HOST", "127.0.0.1:8085",
		"GEMQ_ALLOWED_MODELS", "gemini-2.5-pro, gemini-2.5-flash",
		"GEMQ_DEFAULT_MODEL", "gemini-2.5-flash",
		"GEMINI_API_KEY", "key",
		"GOOGLE_CLOUD_LOCATION", "europe-west4",
		"GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9000",
		"GEMQ_GEMINI_TIMEOUT", "30s",
		"GEMQ_LEASE", "45s",
		"GEMQ_RESULT_TTL", "24h",
		"GEMQ_MAX_ATTEMPTS", "3",
		"GEMQ_TOKEN_ESTIMATOR", "count_tokens",
		"GEMQ_LIMIT_POLICY", "seed",
		"GEMQ_LIMITER_BASELINE", "true",
		"GEMQ_MAX_BODY_BYTES", "1024",
		"GEMQ_LOG_LEVEL", "DEBUG",
		"GEMQ_RETRY_BASE", "250ms",
		"GEMQ_RETRY_MAX", "20s",
		"GEMQ_CAPACITY_BACKOFF_BASE", "1s",
		"GEMQ_CAPACITY_BACKOFF_MAX", "1s",
		"GEMQ_CLAIM_LEAD", "2s",
		"GEMQ_SEED_BACKOFF_BASE", "100ms",
		"GEMQ_SEED_BACKOFF_MAX", "2s",
		"GEMQ_LOG_FILE", "/var/log/gemq.log",
		"GEMQ_RESULTS_BUCKET", "proj-gemq-results",
		"GEMQ_RESULTS_PREFIX", "r/",
		"GEMQ_RESULTS_DATETIME_FORMAT", "YYYY/MM/DD/hh_mm_ss",
		"GEMQ_RESULTS_MAX_DURATION", "1m",
		"GEMQ_RESULT_BODY_GRACE", "4m",
		"GEMQ_FLEX_TIMEOUT", "90s",
		"GEMQ_PRICES", `{"gemini-2.5-flash":{"input":1,"cached":0.5,"output":2}}`,
		"GEMQ_METRICS_EXPORT", "otlp",
		"GEMQ_METRICS_ENDPOINT", "127.0.0.1:4317",
		"GEMQ_METRICS_INTERVAL", "15s",
		"GEMQ_BATCH_COLLECT", "5s",
		"GEMQ_BATCH_POLL_MIN", "1s",
		"GEMQ_BATCH_POLL_MAX", "1m",
		"GEMQ_BATCH_MAX_ENTRIES", "100",
		"GEMQ_BATCH_MAX_BYTES", "1000000",
		"GEMQ_BATCH_INLINE_BYTES", "50000",
		"GEMQ_BATCH_ENQUEUED_TOKENS", "7000",
	)
	c, err := LoadFor(Worker, env(m))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		RedisAddr: "10.0.0.3:6379", RedisPassword: "pw", Project: "proj", TasksTopic: "t", ResultsTopic: "r", DeadLetterTopic: "gemq-dead-letter",
		TasksQueue: "projects/proj/locations/us-central1/queues/gemq", WorkerURL: "https://worker-abc.a.run.app/",
		TasksServiceAccount: "tasks@proj.iam.gserviceaccount.com", CloudTasksEndpoint: "127.0.0.1:8123",
		PubSubEmulatorHost: "127.0.0.1:8085", Quotas: c.Quotas,
		AllowedModels: []string{"gemini-2.5-pro", "gemini-2.5-flash"}, DefaultModel: "gemini-2.5-flash",
		GeminiAPIKey: "key", Location: "europe-west4", GeminiBaseURL: "http://127.0.0.1:9000",
		GeminiTimeout: 30 * time.Second, FlexTimeout: 90 * time.Second, Lease: 45 * time.Second, ResultTTL: 24 * time.Hour, MaxAttempts: 3,
		TokenEstimator: EstimateCountTokens, LimitPolicy: PolicySeed, LimiterBaseline: true, MaxBodyBytes: 1024, LogLevel: slog.LevelDebug,
		RetryBase: 250 * time.Millisecond, RetryMax: 20 * time.Second,
		CapacityBackoffBase: time.Second, CapacityBackoffMax: time.Second,
		ClaimLead: 2 * time.Second, SeedBackoffBase: 100 * time.Millisecond, SeedBackoffMax: 2 * time.Second,
		LogFile:       "/var/log/gemq.log",
		ResultsBucket: "proj-gemq-results", ResultsPrefix: "r/", ResultsDatetimeFormat: "YYYY/MM/DD/hh_mm_ss",
		ResultsMaxDuration: time.Minute, ResultBodyGrace: 4 * time.Minute,
		Prices: map[string]tier.Price{
			"gemini-2.5-pro":        DefaultPrices["gemini-2.5-pro"],
			"gemini-2.5-flash":      {Input: 1, Cached: 0.5, Output: 2},
			"gemini-2.5-flash-lite": DefaultPrices["gemini-2.5-flash-lite"],
			"gemini-2.0-flash":      DefaultPrices["gemini-2.0-flash"],
		},
		MetricsExport: "otlp", MetricsEndpoint: "127.0.0.1:4317", MetricsInterval: 15 * time.Second,
		Batch: Batch{Collect: 5 * time.Second, PollMin: time.Second, PollMax: time.Minute, MaxEntries: 100,
			MaxBytes: 1_000_000, InlineBytes: 50_000, EnqueuedTokens: 7000},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("LoadFor (-want +got):\n%s", diff)
	}
	if !c.ModelAllowed("gemini-2.5-pro") || c.ModelAllowed("gemini-1.0") {
		t.Error("ModelAllowed")
	}
	// Secrets stay out of logs.
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("config", "config", c)
	if strings.Contains(b.String(), `"pw"`) || strings.Contains(b.String(), `"key"`) {
		t.Errorf("secret in log line: %s", b.String())
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		fn   Function
		env  map[string]string
		vars []string // every variable the one error must name
	}{
		{"nothing set", Ingest, map[string]string{},
			[]string{"REDIS_ADDR", "GOOGLE_CLOUD_PROJECT", "GEMQ_QUOTAS"}},
		{"worker requirements", Worker, base(),
			[]string{"GEMQ_TASKS_QUEUE", "GEMQ_WORKER_URL", "GEMINI_API_KEY"}},
		{"invalid values", Ingest, base(
			"REDIS_ADDR", "nohost",
			"REDIS_TLS", "yes please",
			"GEMQ_GEMINI_TIMEOUT", "120",
			"GEMQ_RESULT_TTL", "-1h",
			"GEMQ_MAX_ATTEMPTS", "0",
			"GEMQ_TOKEN_ESTIMATOR", "magic",
			"GEMQ_LIMIT_POLICY", "yolo",
			"GEMQ_LIMITER_BASELINE", "off",
			"GEMQ_MAX_BODY_BYTES", "big",
			"GEMQ_LOG_LEVEL", "loud",
			"GEMQ_TASKS_QUEUE", "gemq",
			"GEMQ_WORKER_URL", "worker",
			"GOOGLE_GEMINI_BASE_URL", "ftp://x",
			"GOOGLE_GENAI_USE_VERTEXAI", "maybe",
		), []string{"REDIS_ADDR", "REDIS_TLS", "GEMQ_GEMINI_TIMEOUT", "GEMQ_RESULT_TTL", "GEMQ_MAX_ATTEMPTS",
			"GEMQ_TOKEN_ESTIMATOR", "GEMQ_LIMIT_POLICY", "GEMQ_LIMITER_BASELINE", "GEMQ_MAX_BODY_BYTES", "GEMQ_LOG_LEVEL",
			"GEMQ_TASKS_QUEUE", "GEMQ_WORKER_URL", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_VERTEXAI"}},
		{"tokenizer without its model file", Worker, base(
			"GEMQ_TASKS_QUEUE", "projects/p/locations/l/queues/q", "GEMQ_WORKER_URL", "https://w/", "GEMINI_API_KEY", "k",
			"GEMQ_TOKEN_ESTIMATOR", "tokenizer",
		), []string{"GEMQ_TOKENIZER_MODEL"}},
		{"back-offs not positive", Ingest, base(
			"GEMQ_RETRY_BASE", "0s",
			"GEMQ_RETRY_MAX", "-1m",
			"GEMQ_CAPACITY_BACKOFF_BASE", "soon",
			"GEMQ_CAPACITY_BACKOFF_MAX", "0",
		), []string{"GEMQ_RETRY_BASE", "GEMQ_RETRY_MAX", "GEMQ_CAPACITY_BACKOFF_BASE", "GEMQ_CAPACITY_BACKOFF_MAX"}},
		{"back-off max below base", Ingest, base(
			"GEMQ_RETRY_BASE", "1m", "GEMQ_RETRY_MAX", "30s",
			"GEMQ_CAPACITY_BACKOFF_BASE", "1h", "GEMQ_CAPACITY_BACKOFF_MAX", "59m",
			"GEMQ_LEASE", "1s",
		), []string{"GEMQ_RETRY_MAX", "GEMQ_CAPACITY_BACKOFF_MAX", "GEMQ_LEASE"}},
		{"back-off max below the default base", Ingest, base("GEMQ_RETRY_MAX", "5s"), []string{"GEMQ_RETRY_MAX"}},
		// An answer may leave Redis only once its results file is written.
		{"body grace not above the results max duration", Ingest, base("GEMQ_RESULTS_MAX_DURATION", "10m", "GEMQ_RESULT_BODY_GRACE", "10m"), []string{"GEMQ_RESULT_BODY_GRACE"}},
		{"results max duration not a duration", Ingest, base("GEMQ_RESULTS_MAX_DURATION", "5"), []string{"GEMQ_RESULTS_MAX_DURATION"}},
		{"lease not above timeout", Ingest, base("GEMQ_GEMINI_TIMEOUT", "60s", "GEMQ_LEASE", "60s"), []string{"GEMQ_LEASE"}},
		// A callback may wait up to the lead (+ slack) for its slot, then
		// call Gemini, under one lease.
		{"lease not above timeout + claim lead", Ingest, base("GEMQ_GEMINI_TIMEOUT", "60s", "GEMQ_CLAIM_LEAD", "5s", "GEMQ_LEASE", "65s"), []string{"GEMQ_LEASE"}},
		{"default lease not above timeout + a long claim lead", Ingest, base("GEMQ_CLAIM_LEAD", "1m"), []string{"GEMQ_LEASE"}},
		{"claim lead and seed back-offs not positive", Ingest, base(
			"GEMQ_CLAIM_LEAD", "0s", "GEMQ_SEED_BACKOFF_BASE", "-1s", "GEMQ_SEED_BACKOFF_MAX", "x",
		), []string{"GEMQ_CLAIM_LEAD", "GEMQ_SEED_BACKOFF_BASE", "GEMQ_SEED_BACKOFF_MAX"}},
		{"seed back-off max below base", Ingest, base("GEMQ_SEED_BACKOFF_BASE", "2m"), []string{"GEMQ_SEED_BACKOFF_MAX"}},
		{"bad quotas", Ingest, base("GEMQ_QUOTAS", `{"scopes":[{"model":1}]}`), []string{"GEMQ_QUOTAS"}},
		{"missing quota file", Ingest, base("GEMQ_QUOTAS", "", "GEMQ_QUOTAS_FILE", "/nonexistent"), []string{"GEMQ_QUOTAS_FILE"}},
		{"model without quota", Ingest, base("GEMQ_ALLOWED_MODELS", "gemini-2.5-flash,gemini-9"), []string{"GEMQ_ALLOWED_MODELS"}},
		{"bad model id", Ingest, base("GEMQ_ALLOWED_MODELS", "models/x"), []string{"GEMQ_ALLOWED_MODELS"}},
		{"default model not allowed", Ingest, base("GEMQ_DEFAULT_MODEL", "gemini-9"), []string{"GEMQ_DEFAULT_MODEL"}},
		{"flex timeout below the call timeout", Ingest, base("GEMQ_FLEX_TIMEOUT", "60s"), []string{"GEMQ_FLEX_TIMEOUT"}},
		{"prices not JSON", Ingest, base("GEMQ_PRICES", "cheap"), []string{"GEMQ_PRICES"}},
		{"negative price", Ingest, base("GEMQ_PRICES", `{"m":{"input":-1}}`), []string{"GEMQ_PRICES"}},
		{"bad metrics export", Worker, base("GEMQ_METRICS_EXPORT", "prometheus", "GEMQ_METRICS_ENDPOINT", "telemetry.googleapis.com",
			"GEMQ_METRICS_INTERVAL", "5s", "GEMQ_TASKS_QUEUE", "projects/p/locations/l/queues/q", "GEMQ_WORKER_URL", "http://w", "GEMINI_API_KEY", "k"),
			[]string{"GEMQ_METRICS_EXPORT", "GEMQ_METRICS_ENDPOINT", "GEMQ_METRICS_INTERVAL"}},
		{"CA without TLS", Ingest, base("REDIS_TLS_CA", "x"), []string{"REDIS_TLS_CA"}},
		{"CA not PEM", Ingest, base("REDIS_TLS", "true", "REDIS_TLS_CA", "x"), []string{"REDIS_TLS_CA"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadFor(tt.fn, env(tt.env))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("LoadFor = %v, want *Error", err)
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.Var)
			}
			if diff := cmp.Diff(tt.vars, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("problems (-want +got):\n%s\nerror: %v", diff, err)
			}
			for _, v := range tt.vars {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("error %q does not name %s", err, v)
				}
			}
		})
	}
}

func TestVertexNeedsNoKey(t *testing.T) {
	_, err := LoadFor(Worker, env(base(
		"GOOGLE_GENAI_USE_VERTEXAI", "true",
		"GEMQ_TASKS_QUEUE", "projects/p/locations/l/queues/q",
		"GEMQ_WORKER_URL", "http://127.0.0.1:8080/Worker",
	)))
	if err != nil {
		t.Fatal(err)
	}
}

// TestRedisTLS connects through RedisOptions to a real redis-server that
// speaks TLS only with a private CA and requires a password, as
// Memorystore with in-transit encryption and AUTH does.
func TestRedisTLS(t *testing.T) {
	dir := t.TempDir()
	caPEM, certFile, keyFile := writeCerts(t, dir)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := redistest.Start(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
	if err := srv.Client(t).ConfigSet(context.Background(), "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}

	c, err := Load(env(base("REDIS_ADDR", "127.0.0.1:"+strconv.Itoa(tlsPort), "REDIS_PASSWORD", "s3cret",
		"REDIS_TLS", "true", "REDIS_TLS_CA", string(caPEM))))
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := NewRedis(c)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING over TLS: %v", err)
	}

	// A wrong password is refused.
	wrong := c
	wrong.RedisPassword = "nope"
	bad, err := NewRedis(wrong)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := bad.Ping(context.Background()).Err(); err == nil {
		t.Error("PING succeeded with a wrong password")
	}

	// Without the CA the server is not trusted.
	c.RedisTLSCA = ""
	untrusted, err := NewRedis(c)
	if err != nil {
		t.Fatal(err)
	}
	defer untrusted.Close()
	if err := untrusted.Ping(context.Background()).Err(); err == nil {
		t.Error("PING succeeded without trusting the CA")
	}
}

func writeCerts(t *testing.T, dir string) (caPEM []byte, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

func TestOpenLog(t *testing.T) {
	var stdout strings.Builder
	w, err := OpenLog("", &stdout)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "to stdout\n")
	if err := w.Close(); err != nil || stdout.String() != "to stdout\n" {
		t.Errorf("OpenLog(\"\"): wrote %q, Close %v", stdout.String(), err)
	}

	// A path is created, then appended to by every writer.
	path := filepath.Join(t.TempDir(), "gemq.log")
	a, err := OpenLog(path, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenLog(path, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(a, "a1\n")
	io.WriteString(b, "b1\n")
	io.WriteString(a, "a2\n")
	a.Close()
	b.Close()
	c, err := OpenLog(path, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "c1\n")
	c.Close()
	if got, _ := os.ReadFile(path); string(got) != "a1\nb1\na2\nc1\n" {
		t.Errorf("log file = %q", got)
	}
	if stdout.String() != "to stdout\n" {
		t.Errorf("stdout written: %q", stdout.String())
	}

	// A path that cannot be opened is an error naming the variable; the
	// setup log then falls back to stdout.
	bad := filepath.Join(t.TempDir(), "missing", "gemq.log")
	if _, err := OpenLog(bad, &stdout); err == nil || !strings.Contains(err.Error(), "GEMQ_LOG_FILE") {
		t.Errorf("OpenLog(%q) = %v, want an error naming GEMQ_LOG_FILE", bad, err)
	}
	s := SetupLog(env(map[string]string{"GEMQ_LOG_FILE": bad}), &stdout)
	io.WriteString(s, "setup\n")
	s.Close()
	if stdout.String() != "to stdout\nsetup\n" {
		t.Errorf("SetupLog with a bad path wrote stdout %q", stdout.String())
	}
	s = SetupLog(env(map[string]string{"GEMQ_LOG_FILE": path}), &stdout)
	io.WriteString(s, "setup\n")
	s.Close()
	if got, _ := os.ReadFile(path); !strings.HasSuffix(string(got), "c1\nsetup\n") {
		t.Errorf("SetupLog with a path: log file = %q", got)
	}
}

// TestRedisOptionsNoRetries: a timed-out script call must not be sent again
// by go-redis (the limiter's and store's scripts are not idempotent).
func TestRedisOptionsNoRetries(t *testing.T) {
	o, err := Config{RedisAddr: "127.0.0.1:1"}.RedisOptions()
	if err != nil || o.MaxRetries != -1 {
		t.Fatalf("RedisOptions() = MaxRetries %d, %v; want -1 (no retries)", o.MaxRetries, err)
	}
}

// TestLoadQuotasNamesTheVariable: the local stack validates the quota
// configuration with LoadQuotas, so it and the functions agree on
// precedence (none: both set is refused) and on which variable is at fault.
func TestLoadQuotasNamesTheVariable(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(quotas), 0o644)
	os.WriteFile(bad, []byte(`{"scopes": [`), 0o644)
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string // "" for success
		wantMsg string
	}{
		{"inline", map[string]string{"GEMQ_QUOTAS": quotas}, "", ""},
		{"file", map[string]string{"GEMQ_QUOTAS_FILE": good}, "", ""},
		{"both set", map[string]string{"GEMQ_QUOTAS": quotas, "GEMQ_QUOTAS_FILE": good}, "GEMQ_QUOTAS", "set only one"},
		{"neither", map[string]string{}, "GEMQ_QUOTAS", "required"},
		{"blank inline, file", map[string]string{"GEMQ_QUOTAS": "  ", "GEMQ_QUOTAS_FILE": good}, "", ""},
		{"malformed inline", map[string]string{"GEMQ_QUOTAS": "{"}, "GEMQ_QUOTAS", "quota config"},
		{"malformed file", map[string]string{"GEMQ_QUOTAS_FILE": bad}, "GEMQ_QUOTAS_FILE", bad},
		{"missing file", map[string]string{"GEMQ_QUOTAS_FILE": filepath.Join(dir, "none.json")}, "GEMQ_QUOTAS_FILE", "none.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := LoadQuotas(env(tt.env))
			if tt.wantVar == "" {
				if err != nil || len(q.Models()) == 0 {
					t.Fatalf("LoadQuotas = %v, %v; want a config", q.Models(), err)
				}
				return
			}
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 {
				t.Fatalf("LoadQuotas error = %v, want one *Error problem", err)
			}
			if p := ce.Problems[0]; p.Var != tt.wantVar || !strings.Contains(p.Msg, tt.wantMsg) {
				t.Errorf("problem = %+v, want var %s and a message containing %q", p, tt.wantVar, tt.wantMsg)
			}
		})
	}
}
