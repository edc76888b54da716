package tfcheck

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/infra/storagesub"
)

// planResult is the JSON plan of terraform/ with terraform.tfvars.example,
// produced once per test binary.
type planResult struct {
	repo string
	dir  string // the copy of terraform/ that was planned
	plan *Plan
	json []byte // terraform show -json
}

var planOnce = sync.OnceValues(func() (*planResult, error) { return runPlan("", nil) })

// runPlan plans terraform/ with terraform.tfvars.example, extraVars (HCL
// overriding it) and extraEnv.
func runPlan(extraVars string, extraEnv []string) (*planResult, error) {
	tf, err := exec.LookPath("terraform")
	if err != nil {
		return nil, fmt.Errorf("terraform is not on PATH: the Terraform checks need it (.ci/run requires it): %w", err)
	}
	wd, _ := os.Getwd()
	repo, err := RepoRoot(wd)
	if err != nil {
		return nil, err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	plugins, err := BuildProvider(repo, filepath.Join(cache, "gemq-tfprovider"))
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "gemq-tfcheck-")
	if err != nil {
		return nil, fmt.Errorf("mkdir temp: %w", err)
	}
	dir := filepath.Join(work, "terraform")
	if err := CopyConfig(filepath.Join(repo, "terraform"), dir); err != nil {
		return nil, err
	}
	example, err := os.ReadFile(filepath.Join(dir, "terraform.tfvars.example"))
	if err != nil {
		return nil, fmt.Errorf("read terraform.tfvars.example: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "terraform.tfvars"), example, 0o644); err != nil {
		return nil, fmt.Errorf("write terraform.tfvars: %w", err)
	}
	if extraVars != "" { // *.auto.tfvars is read after terraform.tfvars and wins
		if err := os.WriteFile(filepath.Join(dir, "variant.auto.tfvars"), []byte(extraVars), 0o644); err != nil {
			return nil, fmt.Errorf("write variant.auto.tfvars: %w", err)
		}
	}
	cliConfig := filepath.Join(work, "terraformrc")
	if err := os.WriteFile(cliConfig, []byte("# no provider installation from the network\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write cli config: %w", err)
	}
	env := append(os.Environ(),
		"TF_CLI_CONFIG_FILE="+cliConfig,
		"TF_IN_AUTOMATION=1",
		"TF_INPUT=0",
		"CHECKPOINT_DISABLE=1",
		// Fake credentials: the stand-in never calls Google, and nothing may pick up real ones.
		"GOOGLE_OAUTH_ACCESS_TOKEN=fake-token-for-offline-plan",
		"GOOGLE_CREDENTIALS=",
		"GOOGLE_APPLICATION_CREDENTIALS=",
		"TF_VAR_source_dir="+repo,
	)
	env = append(env, extraEnv...)
	run := func(args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, tf, args...)
		cmd.Dir = dir
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("terraform %s: %v\n%s%s", args[0], err, stdout.Bytes(), stderr.Bytes())
		}
		return stdout.Bytes(), nil
	}
	if _, err := run("init", "-no-color", "-backend=true", "-plugin-dir="+plugins); err != nil {
		return nil, err
	}
	if _, err := run("validate", "-no-color"); err != nil {
		return nil, err
	}
	if _, err := run("plan", "-no-color", "-lock=false", "-out=gemq.tfplan"); err != nil {
		return nil, err
	}
	out, err := run("show", "-json", "gemq.tfplan")
	if err != nil {
		return nil, err
	}
	plan, err := ParsePlan(out)
	if err != nil {
		return nil, err
	}
	return &planResult{repo: repo, dir: dir, plan: plan, json: out}, nil
}

func testPlan(t *testing.T) *planResult {
	t.Helper()
	p, err := planOnce()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFmt(t *testing.T) {
	tf, err := exec.LookPath("terraform")
	if err != nil {
		t.Fatalf("terraform is not on PATH: %v", err)
	}
	wd, _ := os.Getwd()
	repo, err := RepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tf, "fmt", "-check", "-recursive", "-diff", "-no-color", filepath.Join(repo, "terraform")).CombinedOutput()
	if err != nil {
		t.Fatalf("terraform fmt -check -recursive terraform: %v\n%s", err, out)
	}
	// fmt skips the .example files users copy: check them under the names they are copied to.
	for example, as := range map[string]string{"terraform.tfvars.example": "terraform.tfvars", "backend.hcl.example": "backend.tfvars"} {
		data, err := os.ReadFile(filepath.Join(repo, "terraform", example))
		if err != nil {
			t.Fatal(err)
		}
		copied := filepath.Join(t.TempDir(), as)
		if err := os.WriteFile(copied, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(tf, "fmt", "-check", "-diff", "-no-color", copied).CombinedOutput(); err != nil {
			t.Errorf("terraform fmt -check terraform/%s: %v\n%s", example, err, out)
		}
	}
}

// TestPlan is init + validate + plan; the tests below read the plan it made.
func TestPlan(t *testing.T) {
	p := testPlan(t)
	if len(p.plan.Resources) < 30 {
		t.Fatalf("plan holds %d resources, want the whole deployment", len(p.plan.Resources))
	}
}

func TestPushSubscription(t *testing.T) {
	p := testPlan(t).plan
	sub := p.Resource(t, "google_pubsub_subscription.tasks_push")
	worker := p.Resource(t, "google_cloudfunctions2_function.worker")

	push := sub.Block(t, "push_config")
	if got := p.Refs("google_pubsub_subscription.tasks_push", "push_config", "push_endpoint"); !contains(got, "google_cloudfunctions2_function.worker") {
		t.Errorf("push_endpoint references %v, want the worker function", got)
	}
	if got := p.Refs("google_pubsub_subscription.tasks_push", "push_config", "oidc_token", "service_account_email"); !contains(got, "google_service_account.push") {
		t.Errorf("push OIDC token service account references %v, want google_service_account.push", got)
	}
	if len(blocks(push["oidc_token"])) != 1 {
		t.Errorf("push_config has no oidc_token: pushes would be unauthenticated")
	}

	timeout := number(t, worker.Block(t, "service_config")["timeout_seconds"])
	ack := number(t, sub.Values["ack_deadline_seconds"])
	if ack < timeout || ack > 600 {
		t.Errorf("ack_deadline_seconds = %v, want >= worker timeout %v and <= 600", ack, timeout)
	}
	gemini := p.Variable(t, "gemini_timeout_seconds")
	if n := number(t, gemini); n >= timeout {
		t.Errorf("gemini_timeout_seconds %v must be below the worker timeout %v", n, timeout)
	}

	retry := sub.Block(t, "retry_policy")
	if retry["minimum_backoff"] == nil || retry["maximum_backoff"] == nil {
		t.Errorf("retry_policy = %v, want both backoffs set", retry)
	}

	dl := sub.Block(t, "dead_letter_policy")
	if got := p.Refs("google_pubsub_subscription.tasks_push", "dead_letter_policy", "dead_letter_topic"); !contains(got, "google_pubsub_topic.dead_letter") {
		t.Errorf("dead_letter_topic references %v, want google_pubsub_topic.dead_letter", got)
	}
	if n := number(t, dl["max_delivery_attempts"]); n < 5 || n > 100 {
		t.Errorf("max_delivery_attempts = %v, want 5..100", n)
	}
	dlSub := p.ByType("google_pubsub_subscription")
	found := false
	for _, r := range dlSub {
		if contains(p.Refs(r.Address, "topic"), "google_pubsub_topic.dead_letter") {
			found = true
		}
	}
	if !found {
		t.Errorf("the dead-letter topic has no subscription: dead-lettered messages would be dropped")
	}
}

func TestDeadLetterIAM(t *testing.T) {
	p := testPlan(t).plan
	agent := "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
	var publisher, subscriber bool
	for _, r := range p.ByType("google_pubsub_topic_iam_member") {
		if r.Values["member"] == agent && r.Values["role"] == "roles/pubsub.publisher" && contains(p.Refs(r.Address, "topic"), "google_pubsub_topic.dead_letter") {
			publisher = true
		}
	}
	for _, r := range p.ByType("google_pubsub_subscription_iam_member") {
		if r.Values["member"] == agent && r.Values["role"] == "roles/pubsub.subscriber" && contains(p.Refs(r.Address, "subscription"), "google_pubsub_subscription.tasks_push") {
			subscriber = true
		}
	}
	if !publisher {
		t.Errorf("the Pub/Sub service agent %s is not publisher on the dead-letter topic", agent)
	}
	if !subscriber {
		t.Errorf("the Pub/Sub service agent %s is not subscriber on the push subscription", agent)
	}
}

func TestRedis(t *testing.T) {
	p := testPlan(t).plan
	r := p.Resource(t, "google_redis_instance.limiter")
	cfg, _ := r.Values["redis_configs"].(map[string]any)
	if cfg["maxmemory-policy"] != "noeviction" {
		t.Errorf("redis_configs = %v, want maxmemory-policy noeviction", cfg)
	}
	if v, _ := r.Values["redis_version"].(string); !strings.HasPrefix(v, "REDIS_7_") {
		t.Errorf("redis_version = %q, want REDIS_7_x", v)
	}
	if r.Values["auth_enabled"] != true || r.Values["transit_encryption_mode"] != "SERVER_AUTHENTICATION" {
		t.Errorf("example deployment: auth_enabled = %v, transit_encryption_mode = %v; want AUTH and TLS", r.Values["auth_enabled"], r.Values["transit_encryption_mode"])
	}
	for _, fn := range []string{"ingest", "worker"} {
		sc := p.Resource(t, "google_cloudfunctions2_function."+fn).Block(t, "service_config")
		if !contains(p.Refs("google_cloudfunctions2_function."+fn, "service_config", "vpc_connector"), "google_vpc_access_connector.this") {
			t.Errorf("%s has no VPC connector: it cannot reach Memorystore", fn)
		}
		if sc["vpc_connector_egress_settings"] != "PRIVATE_RANGES_ONLY" {
			t.Errorf("%s vpc_connector_egress_settings = %v", fn, sc["vpc_connector_egress_settings"])
		}
	}
}

func TestFunctions(t *testing.T) {
	pr := testPlan(t)
	p := pr.plan
	goMod, err := os.ReadFile(filepath.Join(pr.repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go 1\.(\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	wantRuntime := "go1" + string(m[1])
	for fn, entry := range map[string]string{"ingest": "Ingest", "worker": "Worker"} {
		r := p.Resource(t, "google_cloudfunctions2_function."+fn)
		bc := r.Block(t, "build_config")
		if bc["entry_point"] != entry {
			t.Errorf("%s entry_point = %v, want %s", fn, bc["entry_point"], entry)
		}
		if bc["runtime"] != wantRuntime {
			t.Errorf("%s runtime = %v, want %s to build go.mod's go directive", fn, bc["runtime"], wantRuntime)
		}
		if !contains(p.Refs(r.Address, "build_config", "source", "storage_source", "object"), "google_storage_bucket_object.source") {
			t.Errorf("%s is not built from the source archive object", fn)
		}
	}
	if ing := p.Resource(t, "google_cloudfunctions2_function.worker").Block(t, "service_config")["ingress_settings"]; ing == "ALLOW_ALL" {
		t.Errorf("worker ingress_settings = ALLOW_ALL: only Pub/Sub and Cloud Tasks call it")
	}

	// The source object is named after the archive's hash, so a code change redeploys.
	archive := p.Data(t, "data.archive_file.source")
	obj := p.Resource(t, "google_storage_bucket_object.source")
	if name, _ := obj.Values["name"].(string); !strings.Contains(name, archive.Values["output_md5"].(string)) {
		t.Errorf("source object name %q does not carry the archive's md5 %v", name, archive.Values["output_md5"])
	}
}

func TestEnvironment(t *testing.T) {
	p := testPlan(t).plan
	names := p.Output(t, "environment_variable_names").(map[string]any)
	secrets := p.Output(t, "secret_environment_variable_names").(map[string]any)
	required := map[string][]string{
		"ingest": {"GOOGLE_CLOUD_PROJECT", "GEMQ_QUOTAS", "GEMQ_TASKS_TOPIC", "REDIS_ADDR"},
		"worker": {"GOOGLE_CLOUD_PROJECT", "GEMQ_QUOTAS", "GEMQ_TASKS_QUEUE", "GEMQ_WORKER_URL", "GEMQ_TASKS_SERVICE_ACCOUNT", "GEMQ_RESULTS_TOPIC", "GEMQ_GEMINI_TIMEOUT", "GEMQ_FLEX_TIMEOUT", "GEMQ_BATCH_COLLECT", "GEMQ_BATCH_ENQUEUED_TOKENS", "REDIS_ADDR", "REDIS_TLS", "REDIS_TLS_CA"},
	}
	secretLike := regexp.MustCompile(`(?i)(API_KEY|PASSWORD|SECRET|(^|_)TOKEN$|CREDENTIAL)`)
	for fn, want := range required {
		got := strings.Fields(fmt.Sprint(names[fn]))
		plain := map[string]bool{}
		for _, n := range names[fn].([]any) {
			plain[n.(string)] = true
			if secretLike.MatchString(n.(string)) {
				t.Errorf("%s: %s is a plain environment variable; secrets go in secret_environment_variables", fn, n)
			}
		}
		for _, w := range want {
			if !plain[w] {
				t.Errorf("%s lacks environment variable %s (have %v)", fn, w, got)
			}
		}
	}
	if got := fmt.Sprint(secrets["worker"]); !strings.Contains(got, "GEMINI_API_KEY") || !strings.Contains(got, "REDIS_PASSWORD") {
		t.Errorf("worker secret environment variables = %v, want GEMINI_API_KEY and REDIS_PASSWORD", got)
	}
	var secretKeys []string
	for _, s := range blocks(p.Resource(t, "google_cloudfunctions2_function.worker").Block(t, "service_config")["secret_environment_variables"]) {
		secretKeys = append(secretKeys, s["key"].(string))
		if s["version"] != "latest" {
			t.Errorf("secret %v version = %v", s["key"], s["version"])
		}
	}
	sort.Strings(secretKeys)
	if diff := cmp.Diff([]string{"GEMINI_API_KEY", "REDIS_PASSWORD"}, secretKeys); diff != "" {
		t.Errorf("worker secret_environment_variables keys (-want +got):\n%s", diff)
	}
	// The worker may read the Gemini key secret, and nobody else.
	var readers []string
	for _, r := range p.ByType("google_secret_manager_secret_iam_member") {
		if r.Values["secret_id"] == "gemq-gemini-api-key" {
			readers = append(readers, strings.Join(p.Refs(r.Address, "member"), ","))
		}
	}
	if len(readers) != 1 || !strings.Contains(readers[0], "google_service_account.worker") {
		t.Errorf("Gemini key secret readers = %v, want only the worker", readers)
	}
}

func TestInvokers(t *testing.T) {
	p := testPlan(t).plan
	var workerFrom []string
	for _, typ := range []string{"google_cloud_run_service_iam_member", "google_cloud_run_v2_service_iam_member", "google_cloudfunctions2_function_iam_member"} {
		for _, r := range p.ByType(typ) {
			svc := p.Refs(r.Address, "service")
			svc = append(svc, p.Refs(r.Address, "name")...)
			svc = append(svc, p.Refs(r.Address, "cloud_function")...)
			if !contains(svc, "google_cloudfunctions2_function.worker") {
				continue
			}
			src := p.Refs(r.Address, "member")
			if contains(src, "each.value") {
				src = p.ForEachRefs(r.Address)
			}
			for _, s := range src {
				if strings.HasPrefix(s, "google_service_account.") && strings.Count(s, ".") == 1 {
					workerFrom = append(workerFrom, s)
				}
			}
			if r.Values["role"] != "roles/run.invoker" {
				t.Errorf("%s grants %v on the worker", r.Address, r.Values["role"])
			}
		}
	}
	sort.Strings(workerFrom)
	workerFrom = compactStrings(workerFrom)
	if diff := cmp.Diff([]string{"google_service_account.push", "google_service_account.tasks_invoker"}, workerFrom); diff != "" {
		t.Errorf("worker invokers (-want +got):\n%s", diff)
	}
	if n := len(p.Instances("google_cloud_run_service_iam_member.worker_invokers")); n != 2 {
		t.Errorf("worker has %d invoker grants, want 2", n)
	}
	for _, r := range p.Instances("google_cloud_run_service_iam_member.ingest_invokers") {
		if r.Values["member"] != "user:me@example.com" {
			t.Errorf("ingest invoker %v is not one the user listed", r.Values["member"])
		}
	}
}

// allowedRoles are the only roles the deployment may grant; project-wide only
// those in projectRoles, and storage.objectViewer only with a condition that
// confines it to Cloud Functions' gcf-v2-sources bucket.
var allowedRoles = map[string]bool{
	"roles/run.invoker": true, "roles/pubsub.publisher": true, "roles/pubsub.subscriber": true,
	"roles/cloudtasks.enqueuer": true, "roles/iam.serviceAccountUser": true, "roles/iam.serviceAccountTokenCreator": true,
	"roles/secretmanager.secretAccessor": true, "roles/storage.objectViewer": true, "roles/storage.objectCreator": true,
	"roles/storage.legacyBucketReader": true,
	"roles/aiplatform.user":            true, "roles/logging.logWriter": true, "roles/artifactregistry.writer": true,
	"roles/telemetry.metricsWriter": true,
}

var projectRoles = map[string]bool{"roles/aiplatform.user": true, "roles/logging.logWriter": true, "roles/telemetry.metricsWriter": true}

func TestLeastPrivilege(t *testing.T) {
	p := testPlan(t).plan
	sources := regexp.MustCompile(`^resource\.name\.startsWith\("projects/_/buckets/gcf-v2-sources-123456789012-us-central1"\)$`)
	n := 0
	for _, r := range p.Resources {
		if strings.HasSuffix(r.Type, "_iam_binding") || strings.HasSuffix(r.Type, "_iam_policy") {
			t.Errorf("%s: authoritative IAM would remove other members; use _iam_member", r.Address)
		}
		if !strings.HasSuffix(r.Type, "_iam_member") {
			continue
		}
		n++
		role, _ := r.Values["role"].(string)
		if !allowedRoles[role] {
			t.Errorf("%s grants %s, which is not in the allowed list", r.Address, role)
		}
		if strings.HasPrefix(r.Type, "google_project_") && !projectRoles[role] {
			conds := blocks(r.Values["condition"])
			if role != "roles/storage.objectViewer" || len(conds) != 1 || !sources.MatchString(fmt.Sprint(conds[0]["expression"])) {
				t.Errorf("%s grants %s project-wide (condition %v); grant it on the resource", r.Address, role, conds)
			}
		}
		if m, _ := r.Values["member"].(string); m == "allUsers" || m == "allAuthenticatedUsers" {
			t.Errorf("%s grants %s to %s", r.Address, role, m)
		}
	}
	if n == 0 {
		t.Fatal("no IAM grants in the plan")
	}
	// The worker may enqueue and act as the invoker account, on those resources only.
	var enqueue, actAs bool
	for _, r := range p.ByType("google_cloud_tasks_queue_iam_member") {
		enqueue = enqueue || (r.Values["role"] == "roles/cloudtasks.enqueuer" && contains(p.Refs(r.Address, "member"), "google_service_account.worker"))
	}
	for _, r := range p.ByType("google_service_account_iam_member") {
		actAs = actAs || (r.Values["role"] == "roles/iam.serviceAccountUser" && contains(p.Refs(r.Address, "member"), "google_service_account.worker") &&
			contains(p.Refs(r.Address, "service_account_id"), "google_service_account.tasks_invoker"))
	}
	if !enqueue || !actAs {
		t.Errorf("worker: cloudtasks.enqueuer on the queue = %v, serviceAccountUser on the tasks invoker = %v; want both", enqueue, actAs)
	}
}

func TestQueue(t *testing.T) {
	p := testPlan(t).plan
	q := p.Resource(t, "google_cloud_tasks_queue.deferred")
	rl := q.Block(t, "rate_limits")
	rc := q.Block(t, "retry_config")
	if number(t, rl["max_dispatches_per_second"]) <= 0 || number(t, rl["max_concurrent_dispatches"]) <= 0 {
		t.Errorf("rate_limits = %v", rl)
	}
	if number(t, rc["max_attempts"]) < 1 || rc["min_backoff"] == nil || rc["max_backoff"] == nil {
		t.Errorf("retry_config = %v", rc)
	}
}

func number(t *testing.T, v any) float64 {
	t.Helper()
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("want a number, got %#v", v)
	}
	return f
}

// The results subscription is one Pub/Sub accepts (max_duration within the
// ack deadline, bounds on max_bytes; checked as infra/storagesub checks the
// local one), and both functions read its files with the layout it writes:
// the bucket, prefix, datetime format and max_duration in their environment
// are the subscription's.
func TestResultsStorage(t *testing.T) {
	p := testPlan(t).plan
	sub := p.Resource(t, "google_pubsub_subscription.results_storage[0]")
	cs := sub.Block(t, "cloud_storage_config")
	maxDur, err := time.ParseDuration(fmt.Sprint(cs["max_duration"]))
	if err != nil {
		t.Fatalf("max_duration %v: %v", cs["max_duration"], err)
	}
	cfg := storagesub.Config{Bucket: fmt.Sprint(cs["bucket"]), FilenamePrefix: fmt.Sprint(cs["filename_prefix"]),
		FilenameSuffix: fmt.Sprint(cs["filename_suffix"]), FilenameDatetimeFormat: fmt.Sprint(cs["filename_datetime_format"]),
		MaxDuration: maxDur, MaxBytes: int64(number(t, cs["max_bytes"]))}
	ack := time.Duration(number(t, sub.Values["ack_deadline_seconds"])) * time.Second
	if err := cfg.Validate(0, ack); err != nil {
		t.Errorf("results subscription: %v", err)
	}
	// The values are unknown at plan time (the map holds Memorystore's
	// address); they come from the locals the subscription is built from
	// (terraform/pubsub.tf, local.results_env). Both functions must get them.
	names := p.Output(t, "environment_variable_names").(map[string]any)
	for _, fn := range []string{"ingest", "worker"} {
		have := map[string]bool{}
		for _, n := range names[fn].([]any) {
			have[n.(string)] = true
		}
		for _, k := range []string{"GEMQ_RESULTS_BUCKET", "GEMQ_RESULTS_PREFIX", "GEMQ_RESULTS_DATETIME_FORMAT", "GEMQ_RESULTS_MAX_DURATION"} {
			if !have[k] {
				t.Errorf("%s lacks %s: it would not read the results files back (or keep every answer in Redis)", fn, k)
			}
		}
	}
}
