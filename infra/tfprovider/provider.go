package main

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-sdk/v2/diag"
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
)

//go:embed schema/*.json
var schemas embed.FS

// file is one extracted provider schema (see schema/extract.js for the format).
type file struct {
	ProviderName    string            `json:"provider_name"`
	ProviderVersion string            `json:"provider_version"`
	Provider        block             `json:"provider"`
	Resources       map[string]block  `json:"resource_schemas"`
	DataSources     map[string]block  `json:"data_source_schemas"`
	Extra           map[string]string `json:"-"`
}

type block struct {
	Attributes map[string]attribute `json:"attributes"`
	BlockTypes map[string]blockType `json:"block_types"`
}

type attribute struct {
	Type     json.RawMessage `json:"type"`
	Required bool            `json:"required"`
	Optional bool            `json:"optional"`
	Computed bool            `json:"computed"`
}

type blockType struct {
	NestingMode string `json:"nesting_mode"`
	MinItems    int    `json:"min_items"`
	MaxItems    int    `json:"max_items"`
	Block       block  `json:"block"`
}

// config is what the provider block configured; data sources read it.
type config struct{ project, region string }

// New returns the stand-in provider named "google", "archive" or "time".
func New(name string) (*schema.Provider, error) {
	raw, err := schemas.ReadFile("schema/" + name + ".json")
	if err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	var f file
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("parse schema/%s.json: %w", name, err)
	}
	provSchema, _, err := convertBlock(f.Provider, false)
	if err != nil {
		return nil, fmt.Errorf("provider schema: %w", err)
	}
	p := &schema.Provider{
		Schema:         provSchema,
		ResourcesMap:   map[string]*schema.Resource{},
		DataSourcesMap: map[string]*schema.Resource{},
		ConfigureContextFunc: func(_ context.Context, d *schema.ResourceData) (any, diag.Diagnostics) {
			c := config{}
			if v, ok := d.GetOk("project"); ok {
				c.project = v.(string)
			}
			if v, ok := d.GetOk("region"); ok {
				c.region = v.(string)
			}
			return c, nil
		},
	}
	for _, typ := range sortedKeys(f.Resources) {
		s, timeouts, err := convertBlock(f.Resources[typ], true)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", typ, err)
		}
		markWriteOnly(s)
		p.ResourcesMap[typ] = &schema.Resource{
			Schema:        s,
			Timeouts:      timeouts,
			CreateContext: refuse("create", typ),
			ReadContext:   func(context.Context, *schema.ResourceData, any) diag.Diagnostics { return nil },
			UpdateContext: refuse("update", typ),
			DeleteContext: refuse("delete", typ),
		}
	}
	for _, typ := range sortedKeys(f.DataSources) {
		s, timeouts, err := convertBlock(f.DataSources[typ], true)
		if err != nil {
			return nil, fmt.Errorf("data source %s: %w", typ, err)
		}
		read := fakeRead(typ)
		if typ == "archive_file" {
			read = readArchive
		}
		p.DataSourcesMap[typ] = &schema.Resource{Schema: s, Timeouts: timeouts, ReadContext: read}
	}
	return p, nil
}

// markWriteOnly flags a managed resource's write-only arguments, which the
// generated code does not mark: the google provider names every one of them
// with a "_wo" suffix (secret_data_wo beside its trigger secret_data_wo_version).
// Without the flag Terraform would refuse an ephemeral value there, and would
// keep the value in the plan, as it does for a plain argument.
func markWriteOnly(s map[string]*schema.Schema) {
	for name, a := range s {
		if strings.HasSuffix(name, "_wo") && (a.Optional || a.Required) && a.Type != schema.TypeList && a.Type != schema.TypeSet && a.Type != schema.TypeMap {
			a.WriteOnly = true
		}
	}
}

func refuse(op, typ string) func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
	return func(context.Context, *schema.ResourceData, any) diag.Diagnostics {
		return diag.Errorf("%s %s: gemq's stand-in provider only serves the schema for validate and plan; apply with the real provider", op, typ)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// convertBlock turns an extracted block into an SDK schema map. At the top level
// of a resource, "id" is left to the SDK and a "timeouts" block becomes the
// resource's Timeouts, as the real provider declares them.
func convertBlock(b block, top bool) (map[string]*schema.Schema, *schema.ResourceTimeout, error) {
	out := map[string]*schema.Schema{}
	for name, a := range b.Attributes {
		if top && name == "id" {
			continue
		}
		s, err := convertType(a.Type, a.Computed && !a.Optional && !a.Required)
		if err != nil {
			return nil, nil, fmt.Errorf("attribute %s: %w", name, err)
		}
		s.Required, s.Optional, s.Computed = a.Required, a.Optional, a.Computed
		if !s.Required && !s.Optional && !s.Computed {
			s.Optional = true
		}
		out[name] = s
	}
	var timeouts *schema.ResourceTimeout
	for name, bt := range b.BlockTypes {
		if top && name == "timeouts" {
			timeouts = &schema.ResourceTimeout{}
			d := schema.DefaultTimeout(20 * 60 * 1e9)
			for op := range bt.Block.Attributes {
				switch op {
				case "create":
					timeouts.Create = d
				case "read":
					timeouts.Read = d
				case "update":
					timeouts.Update = d
				case "delete":
					timeouts.Delete = d
				}
			}
			continue
		}
		inner, _, err := convertBlock(bt.Block, false)
		if err != nil {
			return nil, nil, fmt.Errorf("block %s: %w", name, err)
		}
		s := &schema.Schema{
			Type:       schema.TypeList,
			Optional:   bt.MinItems == 0,
			Required:   bt.MinItems > 0,
			MinItems:   bt.MinItems,
			MaxItems:   bt.MaxItems,
			Elem:       &schema.Resource{Schema: inner},
			ConfigMode: schema.SchemaConfigModeBlock,
		}
		switch bt.NestingMode {
		case "list":
		case "set":
			s.Type = schema.TypeSet
		default:
			return nil, nil, fmt.Errorf("block %s: nesting mode %q", name, bt.NestingMode)
		}
		out[name] = s
	}
	return out, timeouts, nil
}

// convertType maps a cty type in JSON form ("string", ["list", "string"],
// ["list", ["object", {...}]]) to an SDK schema. Objects only occur in
// computed-only attributes, where the SDK renders a nested Resource as an
// attribute, as the real provider's schema does.
func convertType(raw json.RawMessage, computedOnly bool) (*schema.Schema, error) {
	var prim string
	if json.Unmarshal(raw, &prim) == nil {
		switch prim {
		case "string", "dynamic":
			return &schema.Schema{Type: schema.TypeString}, nil
		case "number":
			return &schema.Schema{Type: schema.TypeFloat}, nil
		case "bool":
			return &schema.Schema{Type: schema.TypeBool}, nil
		}
		return nil, fmt.Errorf("unknown type %q", prim)
	}
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return nil, fmt.Errorf("bad type %s", raw)
	}
	var kind string
	if err := json.Unmarshal(pair[0], &kind); err != nil {
		return nil, fmt.Errorf("bad type %s", raw)
	}
	if kind == "object" {
		var attrs map[string]json.RawMessage
		if err := json.Unmarshal(pair[1], &attrs); err != nil {
			return nil, fmt.Errorf("bad object %s", raw)
		}
		inner := map[string]*schema.Schema{}
		for name, t := range attrs {
			s, err := convertType(t, true)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			s.Computed = true
			inner[name] = s
		}
		return &schema.Schema{Type: schema.TypeList, Elem: &schema.Resource{Schema: inner}}, nil
	}
	elem, err := convertType(pair[1], computedOnly)
	if err != nil {
		return nil, err
	}
	var elemValue any = elem
	if r, ok := elem.Elem.(*schema.Resource); ok && elem.Type == schema.TypeList && isObject(pair[1]) {
		elemValue = r // list(object) → nested Resource
	}
	switch kind {
	case "list":
		return &schema.Schema{Type: schema.TypeList, Elem: elemValue}, nil
	case "set":
		return &schema.Schema{Type: schema.TypeSet, Elem: elemValue}, nil
	case "map":
		return &schema.Schema{Type: schema.TypeMap, Elem: elem}, nil
	}
	return nil, fmt.Errorf("unknown collection %q", kind)
}

func isObject(raw json.RawMessage) bool {
	var pair []json.RawMessage
	if json.Unmarshal(raw, &pair) != nil || len(pair) != 2 {
		return false
	}
	var kind string
	return json.Unmarshal(pair[0], &kind) == nil && kind == "object"
}

// fakeProjectNumber is the project number every google data source reports.
const fakeProjectNumber = "123456789012"

// fakeRead returns the Read of a google data source: fixed values that are
// plausible in shape (a project number, a service agent's email), since a data
// source is read at plan time and the plan must go on without Google.
func fakeRead(typ string) schema.ReadContextFunc {
	return func(_ context.Context, d *schema.ResourceData, meta any) diag.Diagnostics {
		c, _ := meta.(config)
		project := c.project
		if v, ok := d.GetOk("project_id"); ok {
			project = v.(string)
		}
		if v, ok := d.GetOk("project"); ok {
			project = v.(string)
		}
		values := map[string]any{}
		switch typ {
		case "google_project":
			values = map[string]any{"project_id": project, "number": fakeProjectNumber, "name": project}
		case "google_client_config":
			values = map[string]any{"project": project, "region": c.region, "access_token": "fake-token"}
		case "google_storage_project_service_account":
			values = map[string]any{
				"email_address": "service-" + fakeProjectNumber + "@gs-project-accounts.iam.gserviceaccount.com",
				"member":        "serviceAccount:service-" + fakeProjectNumber + "@gs-project-accounts.iam.gserviceaccount.com",
			}
		}
		for k, v := range values {
			if err := d.Set(k, v); err != nil {
				return diag.Errorf("%s: set %s: %v", typ, k, err)
			}
		}
		d.SetId("fake/" + typ + "/" + project)
		return nil
	}
}
