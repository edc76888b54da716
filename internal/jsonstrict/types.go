package jsonstrict

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode"
)

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// resolve strips pointers from t and reports whether the value decodes
// itself (json.Unmarshaler, encoding.TextUnmarshaler) or is an interface, in
// which case the scan checks no field names or kinds below it.
func resolve(t reflect.Type) (reflect.Type, bool) {
	for t != nil {
		if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
			t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
			return nil, true
		}
		switch t.Kind() {
		case reflect.Pointer:
			t = t.Elem()
		case reflect.Interface:
			return nil, true
		default:
			return t, false
		}
	}
	return nil, false
}

// expect says why a JSON value of kind k ("object", "array", "string",
// "boolean", "number") cannot be decoded into t, or "" when it can (or t is
// nil).
func expect(t reflect.Type, k string) string {
	if t == nil {
		return ""
	}
	ok := false
	switch k {
	case "object":
		ok = t.Kind() == reflect.Struct || t.Kind() == reflect.Map
	case "array":
		ok = t.Kind() == reflect.Slice || t.Kind() == reflect.Array
	case "string":
		ok = t.Kind() == reflect.String || t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8
	case "boolean":
		ok = t.Kind() == reflect.Bool
	}
	if ok {
		return ""
	}
	return fmt.Sprintf("expected %s, got %s %s", kindName(t), article(k), k)
}

func article(k string) string {
	if strings.IndexByte("aeiou", k[0]) >= 0 {
		return "an"
	}
	return "a"
}

// kindName names the JSON a value of type t is written as.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return fmt.Sprintf("an integer (%s)", t.Kind())
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// field is one JSON-visible struct field.
type field struct {
	typ    reflect.Type
	quoted bool // the ",string" option: the value is a JSON string holding the literal
	depth  int  // embedding depth, for encoding/json's dominance rule
	tagged bool
}

// structFields is the JSON-visible fields of a struct type.
type structFields struct {
	byName map[string]field  // JSON name → field
	byFold map[string]string // folded JSON name → JSON name, for "did you mean"
}

var fieldCache sync.Map // reflect.Type → *structFields

// fieldsOf lists the fields encoding/json decodes for struct type t, with
// embedded structs' fields promoted: the shallowest wins, a tagged field wins
// over an untagged one at the same depth, and other ties are dropped, as
// encoding/json does.
func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	sf := &structFields{byName: map[string]field{}, byFold: map[string]string{}}
	ambiguous := map[string]int{} // name → depth at which it is ambiguous
	var walk func(t reflect.Type, depth int, visited map[reflect.Type]bool)
	walk = func(t reflect.Type, depth int, visited map[reflect.Type]bool) {
		if visited[t] {
			return
		}
		visited[t] = true
		defer delete(visited, t)
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && name == "" {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					walk(et, depth+1, visited)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			tagged := name != ""
			if !tagged {
				name = f.Name
			}
			quoted := false
			for o := range strings.SplitSeq(opts, ",") {
				if o == "string" {
					switch ft.Kind() {
					case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
						reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
						reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
						quoted = true
					}
				}
			}
			nf := field{typ: ft, quoted: quoted, depth: depth, tagged: tagged}
			if d, amb := ambiguous[name]; amb && d <= depth {
				continue
			}
			old, exists := sf.byName[name]
			switch {
			case !exists || depth < old.depth:
				sf.byName[name] = nf
				delete(ambiguous, name)
			case depth == old.depth && tagged && !old.tagged:
				sf.byName[name] = nf
			case depth == old.depth && tagged == old.tagged:
				delete(sf.byName, name)
				ambiguous[name] = depth
			}
		}
	}
	walk(t, 0, map[reflect.Type]bool{})
	for name := range sf.byName {
		sf.byFold[fold(name)] = name
	}
	f, _ := fieldCache.LoadOrStore(t, sf)
	return f.(*structFields)
}

// lookup returns the field key names: the field of that exact JSON name, or
// with proto the lowerCamel field whose snake_case spelling key is
// ("max_output_tokens" for "maxOutputTokens"). name is the field's JSON
// name.
func (sf *structFields) lookup(key string, proto bool) (name string, f field, ok bool) {
	if f, ok := sf.byName[key]; ok {
		return key, f, true
	}
	if !proto || !strings.Contains(key, "_") {
		return "", field{}, false
	}
	name = lowerCamel(key)
	f, ok = sf.byName[name]
	if !ok || snakeCase(name) != key {
		return "", field{}, false
	}
	return name, f, true
}

// ProtoName returns the canonical (lowerCamel) spelling of a field name in
// protobuf's JSON mapping: "max_output_tokens" → "maxOutputTokens"; a
// lowerCamel name is returned unchanged. See Decoder.ProtoJSON.
func ProtoName(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	return lowerCamel(s)
}

// lowerCamel maps snake_case to lowerCamel: "max_output_tokens" →
// "maxOutputTokens".
func lowerCamel(s string) string {
	var b strings.Builder
	up := false
	for _, r := range s {
		switch {
		case r == '_':
			up = true
		case up:
			b.WriteRune(unicode.ToUpper(r))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// snakeCase maps lowerCamel to snake_case: "maxOutputTokens" →
// "max_output_tokens".
func snakeCase(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
