package tfcheck

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Plan is the part of `terraform show -json PLAN` the checks read.
type Plan struct {
	// Resources are the planned managed resources (instances), root module.
	Resources []Resource
	// DataSources are the data sources read while planning (prior state).
	DataSources []Resource
	// Outputs are the planned output values (null when unknown).
	Outputs map[string]any
	// Variables are the input variable values.
	Variables map[string]any

	config map[string]configResource
}

// Resource is one planned resource instance.
type Resource struct {
	Address string
	Type    string
	Name    string
	Values  map[string]any
}

type configResource struct {
	Expressions map[string]any `json:"expressions"`
	DependsOn   []string       `json:"depends_on"`
	ForEach     struct {
		References []string `json:"references"`
	} `json:"for_each_expression"`
}

// TB is the part of testing.TB that the accessors use to fail.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// ParsePlan decodes the JSON of `terraform show -json PLAN`.
func ParsePlan(data []byte) (*Plan, error) {
	var raw struct {
		PlannedValues struct {
			Outputs map[string]struct {
				Value any `json:"value"`
			} `json:"outputs"`
			RootModule struct {
				Resources []resourceJSON `json:"resources"`
			} `json:"root_module"`
		} `json:"planned_values"`
		PriorState struct {
			Values struct {
				RootModule struct {
					Resources []resourceJSON `json:"resources"`
				} `json:"root_module"`
			} `json:"values"`
		} `json:"prior_state"`
		Variables map[string]struct {
			Value any `json:"value"`
		} `json:"variables"`
		Configuration struct {
			RootModule struct {
				Resources []struct {
					Address string `json:"address"`
					configResource
				} `json:"resources"`
			} `json:"root_module"`
		} `json:"configuration"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse plan json: %w", err)
	}
	p := &Plan{Outputs: map[string]any{}, Variables: map[string]any{}, config: map[string]configResource{}}
	for _, r := range raw.PlannedValues.RootModule.Resources {
		if r.Mode == "managed" {
			p.Resources = append(p.Resources, r.resource())
		}
	}
	for _, r := range raw.PriorState.Values.RootModule.Resources {
		if r.Mode == "data" {
			p.DataSources = append(p.DataSources, r.resource())
		}
	}
	for k, v := range raw.PlannedValues.Outputs {
		p.Outputs[k] = v.Value
	}
	for k, v := range raw.Variables {
		p.Variables[k] = v.Value
	}
	for _, r := range raw.Configuration.RootModule.Resources {
		p.config[r.Address] = r.configResource
	}
	return p, nil
}

type resourceJSON struct {
	Address string         `json:"address"`
	Mode    string         `json:"mode"`
	Type    string         `json:"type"`
	Name    string         `json:"name"`
	Values  map[string]any `json:"values"`
}

func (r resourceJSON) resource() Resource {
	return Resource{Address: r.Address, Type: r.Type, Name: r.Name, Values: r.Values}
}

// Resource returns the planned instance at address, failing tb when absent.
func (p *Plan) Resource(tb TB, address string) Resource {
	tb.Helper()
	for _, r := range p.Resources {
		if r.Address == address {
			return r
		}
	}
	tb.Fatalf("plan has no resource %s", address)
	return Resource{}
}

// Data returns the data source read at address, failing tb when absent.
func (p *Plan) Data(tb TB, address string) Resource {
	tb.Helper()
	for _, r := range p.DataSources {
		if r.Address == address {
			return r
		}
	}
	tb.Fatalf("plan has no data source %s", address)
	return Resource{}
}

// ByType returns the planned instances of a resource type.
func (p *Plan) ByType(typ string) []Resource {
	var out []Resource
	for _, r := range p.Resources {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// Instances returns the instances of a counted or for_each resource (address without index).
func (p *Plan) Instances(address string) []Resource {
	var out []Resource
	for _, r := range p.Resources {
		if r.Address == address || strings.HasPrefix(r.Address, address+"[") {
			out = append(out, r)
		}
	}
	return out
}

// Output returns a planned output value, failing tb when it is absent or unknown.
func (p *Plan) Output(tb TB, name string) any {
	tb.Helper()
	v, ok := p.Outputs[name]
	if !ok || v == nil {
		tb.Fatalf("output %s is absent or unknown at plan time", name)
	}
	return v
}

// Variable returns an input variable's value.
func (p *Plan) Variable(tb TB, name string) any {
	tb.Helper()
	v, ok := p.Variables[name]
	if !ok {
		tb.Fatalf("no variable %s", name)
	}
	return v
}

// Refs returns what the configuration expression at path (attribute names and
// nested block names) of the resource at address refers to, e.g.
// ["google_pubsub_topic.dead_letter.id", "google_pubsub_topic.dead_letter"].
// Values unknown at plan time are checked through these references.
func (p *Plan) Refs(address string, path ...string) []string {
	cfg, ok := p.config[configAddress(address)]
	if !ok {
		return nil
	}
	var cur any = cfg.Expressions
	for _, key := range path {
		switch v := cur.(type) {
		case map[string]any:
			cur = v[key]
		case []any: // nested block: the first one
			if len(v) == 0 {
				return nil
			}
			m, _ := v[0].(map[string]any)
			cur = m[key]
		default:
			return nil
		}
	}
	m, _ := cur.(map[string]any)
	refs, _ := m["references"].([]any)
	var out []string
	for _, r := range refs {
		out = append(out, fmt.Sprint(r))
	}
	return out
}

// DependsOn returns the resources the resource at address depends on directly
// in the configuration: its depends_on entries and every resource its
// arguments, blocks, count and for_each refer to, as addresses without
// instance keys ("google_pubsub_topic.tasks"). References through locals are
// not followed (the JSON configuration does not carry locals), so a
// dependency that exists only through a local is not seen: checks built on
// this can fail on a sound configuration, never pass on an unsound one.
func (p *Plan) DependsOn(address string) []string {
	cfg, ok := p.config[configAddress(address)]
	if !ok {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(ref string) {
		if a := resourceAddress(ref); a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, d := range cfg.DependsOn {
		add(d)
	}
	for _, r := range cfg.ForEach.References {
		add(r)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "references" {
					refs, _ := x.([]any)
					for _, r := range refs {
						add(fmt.Sprint(r))
					}
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(cfg.Expressions)
	return out
}

// ConfigAddresses returns the address of every resource in the configuration.
func (p *Plan) ConfigAddresses() []string {
	out := make([]string, 0, len(p.config))
	for a := range p.config {
		out = append(out, a)
	}
	return out
}

// resourceAddress turns a reference ("google_pubsub_topic.tasks.id",
// "google_secret_manager_secret.redis_auth[0]", "time_sleep.apis_ready") into
// the managed resource's address, or "" for variables, locals, data sources
// and the like.
func resourceAddress(ref string) string {
	parts := strings.Split(ref, ".")
	if len(parts) < 2 {
		return ""
	}
	switch parts[0] {
	case "var", "local", "each", "count", "path", "data", "module", "self", "terraform":
		return ""
	}
	return parts[0] + "." + configAddress(parts[1])
}

// ForEachRefs returns what a resource's for_each expression refers to.
func (p *Plan) ForEachRefs(address string) []string {
	return p.config[configAddress(address)].ForEach.References
}

func configAddress(address string) string {
	if i := strings.Index(address, "["); i >= 0 {
		return address[:i]
	}
	return address
}

// Block returns the first nested block name of the resource, failing tb when absent.
func (r Resource) Block(tb TB, name string) map[string]any {
	tb.Helper()
	list, _ := r.Values[name].([]any)
	if len(list) == 0 {
		tb.Fatalf("%s has no %s block", r.Address, name)
	}
	m, _ := list[0].(map[string]any)
	return m
}
