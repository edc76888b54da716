package gemini

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genai"
)

// Request is one Gemini REST GenerateContentRequest without its model: the "request" object of a line of a
// Gemini Batch API input file. JSON field names are the REST (lowerCamel) ones.
type Request struct {
	Contents          []*genai.Content       `json:"contents,omitempty"`
	SystemInstruction *genai.Content         `json:"systemInstruction,omitempty"`
	GenerationConfig  *GenerationConfig      `json:"generationConfig,omitempty"`
	SafetySettings    []*genai.SafetySetting `json:"safetySettings,omitempty"`
	Tools             []*genai.Tool          `json:"tools,omitempty"`
	ToolConfig        *genai.ToolConfig      `json:"toolConfig,omitempty"`
	CachedContent     string                 `json:"cachedContent,omitempty"`
}

// GenerationConfig is the REST generationConfig object of the Gemini API (v1beta).
type GenerationConfig struct {
	StopSequences              []string              `json:"stopSequences,omitempty"`
	ResponseMIMEType           string                `json:"responseMimeType,omitempty"`
	ResponseSchema             *genai.Schema         `json:"responseSchema,omitempty"`
	ResponseJSONSchema         any                   `json:"responseJsonSchema,omitempty"`
	ResponseModalities         []string              `json:"responseModalities,omitempty"`
	CandidateCount             *int32                `json:"candidateCount,omitempty"`
	MaxOutputTokens            *int32                `json:"maxOutputTokens,omitempty"`
	Temperature                *float32              `json:"temperature,omitempty"`
	TopP                       *float32              `json:"topP,omitempty"`
	TopK                       *float32              `json:"topK,omitempty"`
	Seed                       *int32                `json:"seed,omitempty"`
	PresencePenalty            *float32              `json:"presencePenalty,omitempty"`
	FrequencyPenalty           *float32              `json:"frequencyPenalty,omitempty"`
	ResponseLogprobs           bool                  `json:"responseLogprobs,omitempty"`
	Logprobs                   *int32                `json:"logprobs,omitempty"`
	EnableEnhancedCivicAnswers *bool                 `json:"enableEnhancedCivicAnswers,omitempty"`
	SpeechConfig               *genai.SpeechConfig   `json:"speechConfig,omitempty"`
	ThinkingConfig             *genai.ThinkingConfig `json:"thinkingConfig,omitempty"`
	ImageConfig                *genai.ImageConfig    `json:"imageConfig,omitempty"`
	MediaResolution            genai.MediaResolution `json:"mediaResolution,omitempty"`
}

// FieldError is a request error that names the offending field by its JSON path, e.g.
// "request.generationConfig.temperature" or "request.contents[0].parts[1].textt".
type FieldError struct {
	Field   string // JSON path, rooted at "request"
	Message string // what is wrong, without the path
}

// Error returns "<field>: <message>".
func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Field: path, Message: fmt.Sprintf(format, args...)}
}

// ParseRequest decodes one GenerateContentRequest strictly: exactly one JSON object, no trailing data,
// valid UTF-8, no unknown fields (field names are case-sensitive; proto-style snake_case aliases such as
// "max_output_tokens" are accepted as the REST API accepts them), no duplicate fields (an alias and its
// lowerCamel name count as the same field), and JSON types matching the fields. Errors are *FieldError
// naming the field path. It does not check values: see Validate.
func ParseRequest(raw []byte) (*Request, error) {
	const root = "request"
	if !utf8.Valid(raw) {
		return nil, fieldErr(root, "invalid UTF-8 in JSON text")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxErr(root, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fieldErr(root, "must be a JSON object")
	}
	norm, err := walkStruct(dec, reflect.TypeFor[Request](), root)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fieldErr(root, "unexpected data after the JSON object")
	}
	b, err := json.Marshal(norm)
	if err != nil {
		return nil, fmt.Errorf("gemini: re-encode request: %w", err)
	}
	var r Request
	if err := json.Unmarshal(b, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fieldErr(root+"."+te.Field, "cannot be a JSON %s", te.Value)
		}
		return nil, fieldErr(root, "%v", err)
	}
	return &r, nil
}

func syntaxErr(path string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fieldErr(path, "unexpected end of JSON input")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fieldErr(path, "invalid JSON at byte %d: %v", se.Offset, se)
	}
	return fieldErr(path, "invalid JSON: %v", err)
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
	fieldCache   sync.Map // reflect.Type → map[string]field
)

type field struct {
	name string // canonical JSON name
	typ  reflect.Type
}

// fieldsOf maps every accepted JSON name of a struct type (the lowerCamel tag and its snake_case alias) to
// its canonical field.
func fieldsOf(t reflect.Type) map[string]field {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]field)
	}
	m := make(map[string]field)
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			continue
		}
		f := field{name: name, typ: sf.Type}
		m[name] = f
		if s := snake(name); s != name {
			m[s] = f
		}
	}
	fieldCache.Store(t, m)
	return m
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// walkStruct reads the members of an object whose '{' was consumed and returns them under canonical names.
func walkStruct(dec *json.Decoder, t reflect.Type, path string) (map[string]any, error) {
	fields := fieldsOf(t)
	out := make(map[string]any)
	given := make(map[string]string) // canonical → name as given
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxErr(path, err)
		}
		key := tok.(string)
		f, ok := fields[key]
		if !ok {
			return nil, fieldErr(path+"."+key, "unknown field")
		}
		if prev, dup := given[f.name]; dup {
			if prev == key {
				return nil, fieldErr(path+"."+f.name, "duplicate field")
			}
			return nil, fieldErr(path+"."+f.name, "duplicate field (given as %q and %q)", prev, key)
		}
		given[f.name] = key
		v, err := walkValue(dec, f.typ, path+"."+f.name)
		if err != nil {
			return nil, err
		}
		out[f.name] = v
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, syntaxErr(path, err)
	}
	return out, nil
}

// walkValue reads one JSON value that must fit Go type t and returns it in a form json.Marshal writes back
// as the same JSON (with canonical field names).
func walkValue(dec *json.Decoder, t reflect.Type, path string) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxErr(path, err)
	}
	if tok == nil {
		return nil, nil // null: the field is absent
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	delim, isDelim := tok.(json.Delim)
	switch {
	case t == durationType || t == timeType:
		if s, ok := tok.(string); ok {
			return s, nil
		}
		return nil, fieldErr(path, "must be a string")
	case t.Kind() == reflect.Interface:
		return anyValue(dec, tok, path)
	case t.Kind() == reflect.Struct:
		if !isDelim || delim != '{' {
			return nil, fieldErr(path, "must be an object")
		}
		return walkStruct(dec, t, path)
	case t.Kind() == reflect.Map:
		if !isDelim || delim != '{' {
			return nil, fieldErr(path, "must be an object")
		}
		out := make(map[string]any)
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, syntaxErr(path, err)
			}
			k := kt.(string)
			if _, dup := out[k]; dup {
				return nil, fieldErr(path+"."+k, "duplicate key")
			}
			v, err := walkValue(dec, t.Elem(), path+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		if _, err := dec.Token(); err != nil {
			return nil, syntaxErr(path, err)
		}
		return out, nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		s, ok := tok.(string)
		if !ok {
			return nil, fieldErr(path, "must be a base64 string")
		}
		b, err := decodeBase64(s)
		if err != nil {
			return nil, fieldErr(path, "invalid base64: %v", err)
		}
		return b, nil
	case t.Kind() == reflect.Slice:
		if !isDelim || delim != '[' {
			return nil, fieldErr(path, "must be an array")
		}
		out := []any{}
		for i := 0; dec.More(); i++ {
			v, err := walkValue(dec, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, syntaxErr(path, err)
		}
		return out, nil
	case t.Kind() == reflect.String:
		if s, ok := tok.(string); ok {
			return s, nil
		}
		return nil, fieldErr(path, "must be a string")
	case t.Kind() == reflect.Bool:
		if b, ok := tok.(bool); ok {
			return b, nil
		}
		return nil, fieldErr(path, "must be true or false")
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return nil, fieldErr(path, "must be an integer")
		}
		i, err := strconv.ParseInt(n.String(), 10, t.Bits())
		if err != nil {
			f, ferr := strconv.ParseFloat(n.String(), 64)
			if ferr != nil || f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
				return nil, fieldErr(path, "must be an integer within range, got %s", n)
			}
			i = int64(f)
		}
		return i, nil
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			return nil, fieldErr(path, "must be a number")
		}
		if _, err := strconv.ParseFloat(n.String(), t.Bits()); err != nil {
			return nil, fieldErr(path, "must be a number within range, got %s", n)
		}
		return n, nil
	}
	return nil, fieldErr(path, "unsupported field type %s", t)
}

// anyValue reads a free-form JSON value (function arguments, JSON schemas), still rejecting duplicate keys.
func anyValue(dec *json.Decoder, tok json.Token, path string) (any, error) {
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		out := make(map[string]any)
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, syntaxErr(path, err)
			}
			k := kt.(string)
			if _, dup := out[k]; dup {
				return nil, fieldErr(path+"."+k, "duplicate key")
			}
			vt, err := dec.Token()
			if err != nil {
				return nil, syntaxErr(path, err)
			}
			v, err := anyValue(dec, vt, path+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		_, err := dec.Token()
		return out, syntaxErrOrNil(path, err)
	case '[':
		out := []any{}
		for i := 0; dec.More(); i++ {
			vt, err := dec.Token()
			if err != nil {
				return nil, syntaxErr(path, err)
			}
			v, err := anyValue(dec, vt, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		_, err := dec.Token()
		return out, syntaxErrOrNil(path, err)
	}
	return nil, fieldErr(path, "invalid JSON")
}

func syntaxErrOrNil(path string, err error) error {
	if err != nil {
		return syntaxErr(path, err)
	}
	return nil
}

// decodeBase64 accepts standard and URL-safe base64, padded or not, as proto JSON does.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}
