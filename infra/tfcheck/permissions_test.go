package tfcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// gemqActions is the permission map: every action the deployment performs at
// deploy or run time, who performs it, the permission it needs and where, and
// what must wait for the grants providing it. Resources are read from the
// plan (which account the push subscription's token names, which repository
// the functions push to), so a change there is checked, not assumed.
func gemqActions(t *testing.T, p *Plan) []Action {
	t.Helper()
	project := p.Data(t, "data.google_project.this")
	number, _ := project.Values["number"].(string)
	region, _ := p.Variable(t, "region").(string)
	agent := "serviceAccount:service-" + number + "@gcp-sa-pubsub.iam.gserviceaccount.com"
	const (
		build  = "google_service_account.build"
		ingest = "google_service_account.ingest"
		worker = "google_service_account.worker"
		ingFn  = "google_cloudfunctions2_function.ingest"
		wrkFn  = "google_cloudfunctions2_function.worker"
	)
	fns := []string{ingFn, wrkFn}
	ref := func(addr string, path ...string) string {
		if a := bareResource(p.Refs(addr, path...)); a != "" {
			return a
		}
		return fmt.Sprintf("(%s %s: no resource)", addr, strings.Join(path, "."))
	}
	sources := "gcf-v2-sources-" + number + "-" + region
	var actions []Action
	for _, fn := range fns {
		if got := ref(fn, "build_config", "service_account"); got != build {
			t.Errorf("%s is built by %s, want %s", fn, got, build)
		}
		actions = append(actions,
			Action{Name: "build fetching its source", Principal: build, Permission: "storage.objects.get",
				Resource: "bucket:" + sources, ResourceName: "projects/_/buckets/" + sources + "/objects/" + strings.TrimPrefix(fn, "google_cloudfunctions2_function.") + "/function-source.zip",
				Waiters: []string{fn}},
			Action{Name: "build writing its logs", Principal: build, Permission: "logging.logEntries.create", Resource: "project", ResourceName: "projects/" + number, Waiters: []string{fn}},
			Action{Name: "build pushing the image", Principal: build, Permission: "artifactregistry.repositories.uploadArtifacts",
				Resource: ref(fn, "build_config", "docker_repository"), Waiters: []string{fn}},
		)
	}
	push := ref("google_pubsub_subscription.tasks_push", "push_config", "oidc_token", "service_account_email")
	actions = append(actions,
		Action{Name: "push subscription minting OIDC tokens", Principal: agent, Permission: "iam.serviceAccounts.getOpenIdToken",
			Resource: push, Waiters: []string{"google_pubsub_subscription.tasks_push"}},
		Action{Name: "push subscription invoking the worker", Principal: push, Permission: "run.routes.invoke", Resource: wrkFn},
		Action{Name: "dead-lettering: publishing to the dead-letter topic", Principal: agent, Permission: "pubsub.topics.publish",
			Resource: ref("google_pubsub_subscription.tasks_push", "dead_letter_policy", "dead_letter_topic")},
		Action{Name: "dead-lettering: acknowledging on the push subscription", Principal: agent, Permission: "pubsub.subscriptions.consume",
			Resource: "google_pubsub_subscription.tasks_push"},
		Action{Name: "ingest publishing task messages", Principal: ingest, Permission: "pubsub.topics.publish", Resource: "google_pubsub_topic.tasks", Waiters: []string{ingFn}},
		Action{Name: "worker publishing results", Principal: worker, Permission: "pubsub.topics.publish", Resource: "google_pubsub_topic.results", Waiters: []string{wrkFn}},
		Action{Name: "worker creating Cloud Tasks on the queue", Principal: worker, Permission: "cloudtasks.tasks.create",
			Resource: "google_cloud_tasks_queue.deferred", Waiters: []string{wrkFn}},
		Action{Name: "worker creating Cloud Tasks with the invoker's OIDC token (actAs)", Principal: worker, Permission: "iam.serviceAccounts.actAs",
			Resource: "google_service_account.tasks_invoker", Waiters: []string{wrkFn}},
		Action{Name: "Cloud Tasks invoking the worker", Principal: "google_service_account.tasks_invoker", Permission: "run.routes.invoke", Resource: wrkFn},
	)
	for _, m := range p.Variable(t, "ingest_invokers").([]any) {
		actions = append(actions, Action{Name: "a listed invoker calling ingest", Principal: m.(string), Permission: "run.routes.invoke", Resource: ingFn})
	}
	if p.Variable(t, "gemini_backend") == "api_key" {
		secret := "google_secret_manager_secret.gemini_api_key"
		if id, ok := p.Variable(t, "gemini_api_key_secret_id").(string); ok {
			secret = "secret:" + id
		}
		actions = append(actions, Action{Name: "reading the Gemini key secret at deploy", Principal: worker, Permission: "secretmanager.versions.access",
			Resource: secret, Waiters: []string{wrkFn}})
	} else {
		actions = append(actions, Action{Name: "worker calling Vertex AI", Principal: worker, Permission: "aiplatform.endpoints.predict", Resource: "project", ResourceName: "projects/" + number})
	}
	if len(p.Instances("google_secret_manager_secret.redis_auth")) > 0 {
		for sa, fn := range map[string]string{ingest: ingFn, worker: wrkFn} {
			actions = append(actions, Action{Name: "reading the Redis AUTH secret at deploy (" + fn + ")", Principal: sa, Permission: "secretmanager.versions.access",
				Resource: "google_secret_manager_secret.redis_auth", Waiters: []string{fn}})
		}
	}
	if len(p.Instances("google_project_iam_member.worker_metrics")) > 0 {
		actions = append(actions, Action{Name: "worker exporting its metrics (Telemetry API)", Principal: worker, Permission: "telemetry.metrics.write",
			Resource: "project", ResourceName: "projects/" + number})
	}
	if len(p.Instances("google_pubsub_subscription.results_storage")) > 0 {
		for _, perm := range []string{"storage.objects.create", "storage.buckets.get"} {
			actions = append(actions, Action{Name: "results subscription writing result files", Principal: agent, Permission: perm,
				Resource: ref("google_pubsub_subscription.results_storage", "cloud_storage_config", "bucket"), Waiters: []string{"google_pubsub_subscription.results_storage"}})
		}
		for _, perm := range []string{"storage.objects.list", "storage.objects.get"} {
			actions = append(actions, Action{Name: "ingest reading result files back", Principal: ingest, Permission: perm,
				Resource: ref("google_pubsub_subscription.results_storage", "cloud_storage_config", "bucket"), Waiters: []string{ingFn}})
		}
	}
	return actions
}

func loadRoles(t *testing.T) *Roles {
	t.Helper()
	r, err := LoadRoles("roles.json")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rolesAndGrants(t *testing.T, p *Plan) (*Roles, []Grant) {
	t.Helper()
	grants, err := p.Grants()
	if err != nil {
		t.Fatal(err)
	}
	return loadRoles(t), grants
}

// deploymentProblems runs the permission, ordering and connectivity checks.
func deploymentProblems(t *testing.T, p *Plan) []string {
	t.Helper()
	roles := loadRoles(t)
	grants, err := p.Grants()
	if err != nil {
		return []string{err.Error()}
	}
	actions := gemqActions(t, p)
	var problems []string
	problems = append(problems, CheckPermissions(actions, grants, roles)...)
	problems = append(problems, p.CheckOrdering(actions, grants, roles)...)
	problems = append(problems, p.CheckAPIOrdering()...)
	problems = append(problems, redisReachable(p)...)
	return problems
}

// redisReachable is the action "connecting to Redis": each function's traffic
// to private ranges goes through the connector, whose subnet is in the network
// Memorystore peers with.
func redisReachable(p *Plan) []string {
	var problems []string
	redis := p.Instances("google_redis_instance.limiter")
	subnet := p.Instances("google_compute_subnetwork.connector")
	if len(redis) != 1 || len(subnet) != 1 {
		return []string{"connecting to Redis: the plan needs one google_redis_instance.limiter and one google_compute_subnetwork.connector"}
	}
	if n, r := subnet[0].Values["network"], redis[0].Values["authorized_network"]; n == nil || n != r {
		problems = append(problems, fmt.Sprintf("connecting to Redis: the connector's subnet is in network %v, Memorystore peers with %v", n, r))
	}
	if got := bareResource(p.Refs("google_vpc_access_connector.this", "subnet", "name")); got != "google_compute_subnetwork.connector" {
		problems = append(problems, fmt.Sprintf("connecting to Redis: the connector's subnet is %q, want google_compute_subnetwork.connector", got))
	}
	for _, fn := range p.ByType("google_cloudfunctions2_function") {
		if !contains(p.Refs(fn.Address, "service_config", "vpc_connector"), "google_vpc_access_connector.this") {
			problems = append(problems, fmt.Sprintf("connecting to Redis: %s does not use the VPC connector", fn.Address))
		}
	}
	return problems
}

func TestPermissionMap(t *testing.T) {
	p := testPlan(t).plan
	roles, grants := rolesAndGrants(t, p)
	actions := gemqActions(t, p)
	if len(actions) < 15 {
		t.Fatalf("%d actions in the permission map, want the whole deployment", len(actions))
	}
	for _, problem := range CheckPermissions(actions, grants, roles) {
		t.Error(problem)
	}
	// Every grant serves some action: a grant nothing needs is privilege to remove.
	used := map[string]bool{}
	for _, a := range actions {
		for _, g := range Providers(a, grants, roles) {
			used[g.Address] = true
			t.Logf("%-70s %s: %s %s on %s", a.Name, a.Permission, g.Role, g.Condition, g.Address)
		}
	}
	for _, g := range grants {
		if !used[g.Address] {
			t.Errorf("%s (%s to %s on %s) provides no action in the permission map", g.Address, g.Role, g.Member, g.Resource)
		}
	}
}

func TestOrdering(t *testing.T) {
	p := testPlan(t).plan
	roles, grants := rolesAndGrants(t, p)
	for _, problem := range p.CheckOrdering(gemqActions(t, p), grants, roles) {
		t.Error(problem)
	}
	for _, problem := range p.CheckAPIOrdering() {
		t.Error(problem)
	}
	for _, problem := range redisReachable(p) {
		t.Error(problem)
	}
}

// TestChecksFailWhen breaks the planned deployment the way a careless edit
// would, and requires each check to fail with a message naming the action.
func TestChecksFailWhen(t *testing.T) {
	base := testPlan(t).plan
	if problems := deploymentProblems(t, base); len(problems) > 0 {
		t.Fatalf("the planned deployment already fails: %v", problems)
	}
	cases := []struct {
		name   string
		break_ func(p *Plan)
		want   string
	}{
		{"the sources-bucket grant is removed", func(p *Plan) { p.remove("google_project_iam_member.build_reads_gcf_sources") },
			"build fetching its source: google_service_account.build needs storage.objects.get on bucket:gcf-v2-sources-123456789012-us-central1"},
		{"the condition admits another bucket", func(p *Plan) {
			r := p.find("google_project_iam_member.build_reads_gcf_sources")
			r.Values["condition"] = []any{map[string]any{"expression": `resource.name.startsWith("projects/_/buckets/gcf-v2-sources-999-us-central1")`}}
		}, "build fetching its source"},
		{"the worker's depends_on is removed", func(p *Plan) { p.dropDependsOn("google_cloudfunctions2_function.worker") },
			"worker creating Cloud Tasks with the invoker's OIDC token (actAs): google_cloudfunctions2_function.worker does not wait (through a time_sleep) for google_service_account_iam_member.worker_acts_as_tasks_invoker"},
		{"the results subscription's depends_on is removed", func(p *Plan) { p.dropDependsOn("google_pubsub_subscription.results_storage") },
			"results subscription writing result files: google_pubsub_subscription.results_storage does not wait"},
		{"the API wait is skipped by a topic", func(p *Plan) { p.dropDependsOn("google_pubsub_topic.tasks") },
			"google_pubsub_topic.tasks uses pubsub.googleapis.com, enabled in the same apply, but does not wait for the enablement"},
		{"the Cloud Tasks actAs grant is removed", func(p *Plan) { p.remove("google_service_account_iam_member.worker_acts_as_tasks_invoker") },
			"worker creating Cloud Tasks with the invoker's OIDC token (actAs): google_service_account.worker needs iam.serviceAccounts.actAs on google_service_account.tasks_invoker"},
		{"the image writer grant moves to another repository", func(p *Plan) {
			p.config["google_cloudfunctions2_function.worker"] = withoutRef(p.config["google_cloudfunctions2_function.worker"], "google_artifact_registry_repository.functions")
		}, "build pushing the image"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := base.clone()
			c.break_(p)
			problems := deploymentProblems(t, p)
			for _, problem := range problems {
				if strings.Contains(problem, c.want) {
					t.Logf("fails as it should: %s", problem)
					return
				}
			}
			t.Errorf("no problem names %q; got %q", c.want, problems)
		})
	}
}

// TestPolicy holds the rules no plan may break: Memorystore BASIC only when
// the user opts in, secrets only as write-only values, a remote backend in the
// example.
func TestPolicy(t *testing.T) {
	pr := testPlan(t)
	p := pr.plan
	r := p.Resource(t, "google_redis_instance.limiter")
	redisVar, _ := p.Variable(t, "redis").(map[string]any)
	if r.Values["tier"] == "BASIC" && redisVar["accept_basic_data_loss"] != true {
		t.Errorf("Memorystore tier BASIC without redis.accept_basic_data_loss")
	}
	if r.Values["tier"] != "STANDARD_HA" {
		t.Errorf("example deployment: Memorystore tier %v, want STANDARD_HA (the default)", r.Values["tier"])
	}
	pc := r.Block(t, "persistence_config")
	if pc["persistence_mode"] != "RDB" || pc["rdb_snapshot_period"] == nil {
		t.Errorf("example deployment: persistence_config = %v, want RDB snapshots", pc)
	}
	for _, v := range p.ByType("google_secret_manager_secret_version") {
		if v.Values["secret_data"] != nil || len(p.Refs(v.Address, "secret_data")) > 0 {
			t.Errorf("%s sets secret_data: the value would be kept in the plan and the state; use secret_data_wo", v.Address)
		}
		if len(p.Refs(v.Address, "secret_data_wo")) == 0 {
			t.Errorf("%s writes no secret_data_wo", v.Address)
		}
	}
	if v, ok := p.Variables["gemini_api_key"]; ok && v != nil {
		t.Errorf("gemini_api_key has a value in the plan (%T): it must be ephemeral", v)
	}

	// The configuration keeps its state in Cloud Storage; the example fills in the bucket.
	var backend bool
	files, _ := filepath.Glob(filepath.Join(pr.repo, "terraform", "*.tf"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		backend = backend || regexp.MustCompile(`(?m)^\s*backend\s+"gcs"\s*\{`).Match(data)
	}
	if !backend {
		t.Errorf("no backend \"gcs\" in terraform/*.tf: state (with the Redis AUTH string) would stay on a laptop")
	}
	example, err := os.ReadFile(filepath.Join(pr.repo, "terraform", "backend.hcl.example"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"bucket", "prefix"} {
		if !regexp.MustCompile(`(?m)^` + key + `\s*=\s*"[^"]+"`).Match(example) {
			t.Errorf("backend.hcl.example sets no %s", key)
		}
	}
}

// TestVariants plans the configuration with other inputs than the example's:
// the key secret created by Terraform (the key must appear nowhere in the
// plan), an existing network, BASIC chosen explicitly; and inputs every
// validation must refuse.
func TestVariants(t *testing.T) {
	const key = "AIza-gemq-test-key-that-must-not-leak"
	pr, err := runPlan(`
gemini_api_key_secret_id = null
network                  = "corp-vpc"
redis                    = { tier = "BASIC", accept_basic_data_loss = true }
`, []string{"TF_VAR_gemini_api_key=" + key})
	if err != nil {
		t.Fatal(err)
	}
	p := pr.plan
	if strings.Contains(string(pr.json), key) {
		t.Errorf("the Gemini key appears in the plan: secret_data_wo is not write-only, or the variable is not ephemeral")
	}
	v := p.Resource(t, "google_secret_manager_secret_version.gemini_api_key[0]")
	if v.Values["secret_data"] != nil || len(p.Refs(v.Address, "secret_data_wo")) == 0 {
		t.Errorf("key secret version: secret_data %v, secret_data_wo refs %v", v.Values["secret_data"], p.Refs(v.Address, "secret_data_wo"))
	}
	if n := len(p.ByType("google_compute_network")); n != 0 {
		t.Errorf("network = \"corp-vpc\" still creates %d networks", n)
	}
	if got := p.Resource(t, "google_compute_subnetwork.connector").Values["network"]; got != "projects/my-gemini-project/global/networks/corp-vpc" {
		t.Errorf("connector subnet network = %v", got)
	}
	if got := p.Resource(t, "google_redis_instance.limiter").Values["tier"]; got != "BASIC" {
		t.Errorf("tier = %v, want BASIC when opted in", got)
	}
	for _, problem := range deploymentProblems(t, p) {
		t.Error(problem)
	}

	_, err = runPlan(`
redis       = { tier = "BASIC" }
max_attempts = 0
result_ttl   = "7d"
push_retry   = { minimum_backoff = "60s", maximum_backoff = "10s" }
tasks_queue  = { max_concurrent_dispatches = 0 }
connector    = { min_instances = 1, max_instances = 20 }
network      = "projects/p/global/networks/x"
`, nil)
	if err == nil {
		t.Fatal("a plan with invalid inputs succeeded")
	}
	for _, want := range []string{
		"set redis.accept_basic_data_loss = true",
		"max_attempts must be a whole number from 1 to 100",
		"result_ttl must be a duration such as 168h",
		"minimum_backoff <= maximum_backoff",
		"max_concurrent_dispatches must be a whole number from 1 to 5000",
		"2 <= min_instances < max_instances <= 10",
		"network must be the name (not the URL)",
	} {
		if !strings.Contains(strings.Join(strings.Fields(err.Error()), " "), want) {
			t.Errorf("invalid inputs: no error says %q", want)
		}
	}
}

// clone copies the plan deeply enough for a test to break one copy.
func (p *Plan) clone() *Plan {
	c := *p
	c.Resources = nil
	for _, r := range p.Resources {
		v := make(map[string]any, len(r.Values))
		for k, x := range r.Values {
			v[k] = x
		}
		r.Values = v
		c.Resources = append(c.Resources, r)
	}
	c.config = make(map[string]configResource, len(p.config))
	for k, v := range p.config {
		c.config[k] = v
	}
	return &c
}

func (p *Plan) remove(address string) {
	var keep []Resource
	for _, r := range p.Resources {
		if configAddress(r.Address) != address {
			keep = append(keep, r)
		}
	}
	p.Resources = keep
	delete(p.config, address)
	for a, cfg := range p.config {
		p.config[a] = withoutRef(cfg, address)
	}
}

func (p *Plan) find(address string) *Resource {
	for i := range p.Resources {
		if p.Resources[i].Address == address {
			return &p.Resources[i]
		}
	}
	return &Resource{Values: map[string]any{}}
}

func (p *Plan) dropDependsOn(address string) {
	cfg := p.config[address]
	cfg.DependsOn = nil
	p.config[address] = cfg
}

// withoutRef returns cfg with every reference to address removed (as if the
// resource it names were gone).
func withoutRef(cfg configResource, address string) configResource {
	var deps []string
	for _, d := range cfg.DependsOn {
		if resourceAddress(d) != address {
			deps = append(deps, d)
		}
	}
	cfg.DependsOn = deps
	var strip func(v any) any
	strip = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			out := map[string]any{}
			for k, x := range v {
				if k == "references" {
					var keep []any
					for _, r := range x.([]any) {
						if resourceAddress(fmt.Sprint(r)) != address {
							keep = append(keep, r)
						}
					}
					out[k] = keep
					continue
				}
				out[k] = strip(x)
			}
			return out
		case []any:
			out := make([]any, len(v))
			for i, x := range v {
				out[i] = strip(x)
			}
			return out
		}
		return v
	}
	cfg.Expressions, _ = strip(cfg.Expressions).(map[string]any)
	return cfg
}
