package tfcheck

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Roles is the committed snapshot of the predefined roles' permissions
// (roles.json), each with the page of Google's IAM roles reference it was
// taken from.
type Roles struct {
	About string          `json:"about"`
	Roles map[string]Role `json:"roles"`
}

// Role is one role's permissions. Complete is false when Permissions holds
// only those gemq relies on.
type Role struct {
	Source      string   `json:"source"`
	Complete    bool     `json:"complete"`
	Permissions []string `json:"permissions"`
}

// LoadRoles reads a roles snapshot, refusing a role without a source.
func LoadRoles(path string) (*Roles, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read roles snapshot: %w", err)
	}
	var r Roles
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("parse roles snapshot %s: %w", path, err)
	}
	for name, role := range r.Roles {
		if !strings.HasPrefix(role.Source, "https://cloud.google.com/iam/docs/") {
			return nil, fmt.Errorf("roles snapshot: %s names no source in Google's IAM reference", name)
		}
	}
	return &r, nil
}

// Grants reports whether role includes permission.
func (r *Roles) Grants(role, permission string) bool {
	for _, p := range r.Roles[role].Permissions {
		if p == permission {
			return true
		}
	}
	return false
}

// Action is one thing the deployment does at deploy or run time, and the
// permission it needs. Principal is a service account's resource address
// ("google_service_account.build") or a literal IAM member (a service agent).
// The permission is needed on Resource: a resource address, or a literal
// ("secret:NAME" for a secret Terraform does not manage, "project" for the
// project itself); ResourceName is the full resource name an IAM condition
// sees. Waiters are the resources that must not be created before the grants
// providing the permission have propagated.
type Action struct {
	Name         string
	Principal    string
	Permission   string
	Resource     string
	ResourceName string
	Waiters      []string
}

// Grant is one planned IAM member grant, read from the plan.
type Grant struct {
	Address   string
	Role      string
	Member    string // a service account's resource address, or the literal member
	Resource  string // the granted-on resource's address, or "project", or "secret:NAME"
	Condition string // CEL expression, "" when unconditional
}

// grantResourceArgs names, for each IAM member resource type, the argument
// that identifies the resource the role is granted on.
var grantResourceArgs = map[string]string{
	"google_storage_bucket_iam_member":               "bucket",
	"google_pubsub_topic_iam_member":                 "topic",
	"google_pubsub_subscription_iam_member":          "subscription",
	"google_cloud_tasks_queue_iam_member":            "name",
	"google_service_account_iam_member":              "service_account_id",
	"google_cloud_run_service_iam_member":            "service",
	"google_secret_manager_secret_iam_member":        "secret_id",
	"google_artifact_registry_repository_iam_member": "repository",
}

// Grants returns every IAM member grant of the plan. A member given through
// for_each is identified by the instance key, which must be the service
// account's resource name (["worker"] for google_service_account.worker) and
// be referenced by the for_each expression.
func (p *Plan) Grants() ([]Grant, error) {
	var out []Grant
	for _, r := range p.Resources {
		if !strings.HasSuffix(r.Type, "_iam_member") {
			continue
		}
		g := Grant{Address: r.Address}
		g.Role, _ = r.Values["role"].(string)
		member, err := p.grantMember(r)
		if err != nil {
			return nil, err
		}
		g.Member = member
		if r.Type == "google_project_iam_member" {
			g.Resource = "project"
			for _, c := range blocks(r.Values["condition"]) {
				g.Condition, _ = c["expression"].(string)
			}
		} else {
			arg, ok := grantResourceArgs[r.Type]
			if !ok {
				return nil, fmt.Errorf("%s: the permission check does not know what %s grants on", r.Address, r.Type)
			}
			g.Resource = bareResource(p.Refs(r.Address, arg))
			if g.Resource != "" && len(p.Instances(g.Resource)) == 0 {
				g.Resource = "" // a conditional reference to a resource this plan does not create
			}
			if g.Resource == "" && r.Type == "google_secret_manager_secret_iam_member" {
				if id, _ := r.Values["secret_id"].(string); id != "" {
					g.Resource = "secret:" + id
				}
			}
			if g.Resource == "" {
				return nil, fmt.Errorf("%s: cannot tell which resource its %s names", r.Address, arg)
			}
		}
		out = append(out, g)
	}
	return out, nil
}

func (p *Plan) grantMember(r Resource) (string, error) {
	if m, ok := r.Values["member"].(string); ok && m != "" {
		return m, nil
	}
	refs := p.Refs(r.Address, "member")
	if sa := bareResource(refs); strings.HasPrefix(sa, "google_service_account.") {
		return sa, nil
	}
	if contains(refs, "each.value") {
		i := strings.Index(r.Address, "[\"")
		if i < 0 {
			return "", fmt.Errorf("%s: member from for_each, but the instance has no string key", r.Address)
		}
		key := strings.TrimSuffix(r.Address[i+2:], "\"]")
		sa := "google_service_account." + key
		for _, ref := range p.ForEachRefs(r.Address) {
			if resourceAddress(ref) == sa {
				return sa, nil
			}
		}
		return "", fmt.Errorf("%s: member from for_each key %q, but the for_each expression does not refer to %s", r.Address, key, sa)
	}
	return "", fmt.Errorf("%s: cannot tell who the member is (refs %v)", r.Address, refs)
}

// bareResource returns the one managed resource address among refs.
func bareResource(refs []string) string {
	for _, r := range refs {
		if a := resourceAddress(r); a != "" && a == configAddress(r) {
			return a
		}
	}
	for _, r := range refs {
		if a := resourceAddress(r); a != "" {
			return a
		}
	}
	return ""
}

var startsWith = regexp.MustCompile(`^resource\.name\.startsWith\("([^"]+)"\)$`)

// admits reports whether a grant's condition lets it apply to resourceName.
// Only the form this deployment uses is understood; any other condition
// admits nothing, so the check fails rather than guess.
func admits(condition, resourceName string) bool {
	if condition == "" {
		return true
	}
	m := startsWith.FindStringSubmatch(strings.TrimSpace(condition))
	return m != nil && resourceName != "" && strings.HasPrefix(resourceName, m[1])
}

// Providers returns the grants that give a.Principal a.Permission on
// a.Resource: on the resource itself, or on the project (with a condition
// that admits the resource's name).
func Providers(a Action, grants []Grant, roles *Roles) []Grant {
	var out []Grant
	for _, g := range grants {
		if g.Member != a.Principal || !roles.Grants(g.Role, a.Permission) {
			continue
		}
		if g.Resource == a.Resource && g.Condition == "" {
			out = append(out, g)
		} else if g.Resource == "project" && admits(g.Condition, a.ResourceName) {
			out = append(out, g)
		}
	}
	return out
}

// CheckPermissions returns one problem for every action no planned grant
// provides, naming the action, the permission and what it is needed on.
func CheckPermissions(actions []Action, grants []Grant, roles *Roles) []string {
	var problems []string
	for _, a := range actions {
		if len(Providers(a, grants, roles)) == 0 {
			on := a.Resource
			if a.ResourceName != "" {
				on += " (" + a.ResourceName + ")"
			}
			problems = append(problems, fmt.Sprintf("%s: %s needs %s on %s, and no planned grant provides it", a.Name, a.Principal, a.Permission, on))
		}
	}
	return problems
}

// Reaches returns every resource address the resource at address depends on,
// directly or through others.
func (p *Plan) Reaches(address string) map[string]bool {
	seen := map[string]bool{}
	stack := []string{configAddress(address)}
	for len(stack) > 0 {
		a := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, d := range p.DependsOn(a) {
			if !seen[d] {
				seen[d] = true
				stack = append(stack, d)
			}
		}
	}
	return seen
}

// waitsFor reports whether waiter depends on a time_sleep that depends on
// target: the waiter is created only after target exists and the sleep ran.
func (p *Plan) waitsFor(waiter, target string) bool {
	for d := range p.Reaches(waiter) {
		if strings.HasPrefix(d, "time_sleep.") && p.Reaches(d)[configAddress(target)] {
			return true
		}
	}
	return false
}

// CheckOrdering returns a problem, naming the action, for every waiter of an
// action that is not created after the grants providing it have propagated,
// and for every IAM grant to a function's build or runtime account that the
// function does not wait for.
func (p *Plan) CheckOrdering(actions []Action, grants []Grant, roles *Roles) []string {
	var problems []string
	for _, a := range actions {
		for _, g := range Providers(a, grants, roles) {
			for _, w := range a.Waiters {
				if !p.waitsFor(w, g.Address) {
					problems = append(problems, fmt.Sprintf("%s: %s does not wait (through a time_sleep) for %s, which grants it; IAM takes a minute or two to apply", a.Name, w, configAddress(g.Address)))
				}
			}
		}
	}
	for _, fn := range p.ByType("google_cloudfunctions2_function") {
		ids := map[string]bool{
			bareResource(p.Refs(fn.Address, "build_config", "service_account")):         true,
			bareResource(p.Refs(fn.Address, "service_config", "service_account_email")): true,
		}
		for _, g := range grants {
			if !ids[g.Member] || g.Resource == configAddress(fn.Address) {
				continue
			}
			if !p.waitsFor(fn.Address, g.Address) {
				problems = append(problems, fmt.Sprintf("function %s: does not wait (through a time_sleep) for %s, a grant to its account %s", fn.Address, configAddress(g.Address), g.Member))
			}
		}
	}
	return compactSorted(problems)
}

// apiOfType maps a resource type prefix to the API that serves it.
var apiOfType = []struct{ prefix, api string }{
	{"google_service_account", "iam.googleapis.com"},
	{"google_pubsub_", "pubsub.googleapis.com"},
	{"google_cloud_tasks_", "cloudtasks.googleapis.com"},
	{"google_cloudfunctions2_", "cloudfunctions.googleapis.com"},
	{"google_cloud_run_", "run.googleapis.com"},
	{"google_redis_", "redis.googleapis.com"},
	{"google_vpc_access_", "vpcaccess.googleapis.com"},
	{"google_compute_", "compute.googleapis.com"},
	{"google_secret_manager_", "secretmanager.googleapis.com"},
	{"google_storage_", "storage.googleapis.com"},
	{"google_artifact_registry_", "artifactregistry.googleapis.com"},
	{"google_monitoring_", "monitoring.googleapis.com"},
}

// CheckAPIOrdering returns a problem for every resource whose API the plan
// enables (google_project_service.apis) that is not created after that
// enablement and a time_sleep following it.
func (p *Plan) CheckAPIOrdering() []string {
	enabled := map[string]bool{}
	for _, r := range p.Instances("google_project_service.apis") {
		if s, ok := r.Values["service"].(string); ok {
			enabled[s] = true
		}
	}
	if len(enabled) == 0 {
		return nil
	}
	var problems []string
	for _, r := range p.Resources {
		api := ""
		for _, t := range apiOfType {
			if strings.HasPrefix(r.Type, t.prefix) {
				api = t.api
				break
			}
		}
		if api == "" || !enabled[api] {
			continue
		}
		if !p.waitsFor(r.Address, "google_project_service.apis") {
			problems = append(problems, fmt.Sprintf("%s uses %s, enabled in the same apply, but does not wait for the enablement (through a time_sleep after google_project_service.apis)", configAddress(r.Address), api))
		}
	}
	return compactSorted(problems)
}

func compactSorted(s []string) []string {
	sort.Strings(s)
	return compactStrings(s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func compactStrings(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func blocks(v any) []map[string]any {
	list, _ := v.([]any)
	var out []map[string]any
	for _, x := range list {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
