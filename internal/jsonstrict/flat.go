package jsonstrict

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
)

// A flat struct has only exported string and json.RawMessage fields, named
// by their tags or names, none embedded: a Batch API line ({"key",
// "request"}) is one. Once the scan has passed, Decode fills one from the
// spans the scan recorded for its members instead of running encoding/json
// over the input again (a second and a third pass over every request, most
// of ingest's time per task), with encoding/json's results: a string field
// gets the unescaped string (null leaves it as it is), a RawMessage field a
// copy of the value as written (null included).

// flatPlan maps a flat struct's JSON names to its fields.
type flatPlan map[string]flatField

type flatField struct {
	index int
	raw   bool // json.RawMessage; else string
}

// member is the span of one member's value in the scanned input, by the
// struct field's JSON name.
type member struct {
	name       string
	start, end int
}

var (
	flatCache   sync.Map // reflect.Type → flatPlan (nil: not flat)
	rawMessageT = reflect.TypeFor[json.RawMessage]()
)

// flatPlanOf returns t's plan, or nil when t is not a flat struct.
func flatPlanOf(t reflect.Type) flatPlan {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	if p, ok := flatCache.Load(t); ok {
		return p.(flatPlan)
	}
	p := flatPlan{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		raw := f.Type == rawMessageT
		_, dup := p[name]
		if name == "-" || f.Anonymous || !f.IsExported() || dup || strings.Contains(opts, "string") ||
			!raw && f.Type != reflect.TypeFor[string]() {
			p = nil
			break
		}
		p[name] = flatField{index: i, raw: raw}
	}
	flatCache.Store(t, p)
	return p
}

// fill sets v's fields from the members of data (a scanned object).
func (p flatPlan) fill(data []byte, members []member, v reflect.Value) error {
	for _, m := range members {
		f, ok := p[m.name]
		if !ok {
			continue
		}
		text := data[m.start:m.end]
		switch {
		case f.raw:
			v.Field(f.index).SetBytes(append([]byte(nil), text...))
		case string(text) == "null":
		default:
			s, err := (&scanner{data: text}).str(true)
			if err != nil {
				return err
			}
			v.Field(f.index).SetString(s)
		}
	}
	return nil
}
