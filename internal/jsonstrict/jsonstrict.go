// Package jsonstrict decodes untrusted JSON and JSONL strictly.
//
// encoding/json is lenient in ways that hide mistakes in user input: it
// silently keeps the last of duplicate object keys, merges keys that differ
// only in case ("Model" and "model") into one struct field, replaces invalid
// UTF-8 and lone UTF-16 surrogates with U+FFFD, and reports unknown fields
// and type mismatches without saying where they are. This package scans the
// input once before encoding/json decodes it (a flat struct of string and
// json.RawMessage fields is filled from the scan itself) and rejects all of
// these, with
// an *Error that names the field path (for example
// requests[3].request.contents[0].parts) and, for JSONL, the line.
//
// The scan checks, in one pass over the bytes:
//   - JSON syntax, and that nothing but whitespace follows the value;
//   - valid UTF-8 everywhere and no lone surrogate escapes in strings;
//   - every key of an object decoded into a struct names one of its fields,
//     spelled exactly as the field's JSON name: a key that matches a field
//     only up to case (which encoding/json would merge into it) is an
//     unknown field;
//   - no duplicate keys in any object; in an object of no known type
//     (Validate) not even keys that differ only in case (Unicode simple case
//     folding, as encoding/json matches fields); keys of a Go map, and keys
//     anywhere inside an opaque value, are data and compared exactly;
//   - values whose Go type is known have a matching JSON kind (a string for a
//     string field, an integer in range for an int field, ...);
//   - the Limits: nesting depth, string length, array length, object size,
//     and for JSONL line length and line count.
//
// Values decoded into json.RawMessage, interfaces or types with their own
// UnmarshalJSON are scanned for everything except field names and kinds.
//
// It is the one strict decoder of gemq's inputs: ingest decodes submissions
// with it, and internal/gemini decodes every GenerateContentRequest (at
// ingest and in the worker) with a Decoder whose ProtoJSON option also
// accepts the spellings Google's REST APIs accept.
//
// All functions are safe for concurrent use.
package jsonstrict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Kind classifies an Error.
type Kind string

// The kinds of Error.
const (
	// Syntax is malformed JSON, including an empty document.
	Syntax Kind = "syntax"
	// Trailing is data after the top-level value.
	Trailing Kind = "trailing_data"
	// InvalidUTF8 is bytes that are not UTF-8, or a lone surrogate escape.
	InvalidUTF8 Kind = "invalid_utf8"
	// DuplicateKey is a key repeated in one object, exactly or up to case.
	DuplicateKey Kind = "duplicate_key"
	// UnknownField is a key that names no field of the target struct.
	UnknownField Kind = "unknown_field"
	// Type is a value whose JSON kind does not fit the target's Go type.
	Type Kind = "type"
	// Limit is an input beyond one of the Limits.
	Limit Kind = "limit"
)

// Error describes why an input was refused and where.
type Error struct {
	// Kind classifies the problem.
	Kind Kind
	// Line is the 1-based line of a JSONL input; 0 for a single document.
	Line int
	// Path is the field path of the offending value, such as
	// requests[3].request.contents[0].parts, relative to the document (the
	// line, for JSONL); "" for the top-level value itself. Keys that are not
	// plain identifiers are written as ["quoted"].
	Path string
	// Offset is the byte offset in the document (the line, for JSONL) at which
	// the problem was found.
	Offset int64
	// Msg says what is wrong, without the line and path.
	Msg string
}

// Error returns "line N: path: msg", leaving out the parts that are empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Default limits, used where a Limits field is zero.
const (
	// DefaultMaxDepth is the default nesting depth of arrays and objects.
	DefaultMaxDepth = 64
)

// Limits bounds what an input may hold. A zero field means: MaxDepth
// DefaultMaxDepth, every other field unlimited. Negative values are treated
// as zero.
type Limits struct {
	// MaxDepth is the deepest nesting of arrays and objects; the top-level
	// value of an object is at depth 1.
	MaxDepth int
	// MaxStringBytes is the longest string (key or value) or number literal,
	// in bytes as written in the input (escapes counted as written).
	MaxStringBytes int
	// MaxArrayLen is the most elements one array may hold.
	MaxArrayLen int
	// MaxObjectKeys is the most members one object may hold.
	MaxObjectKeys int
	// MaxLineBytes is the longest JSONL line, without its line ending.
	MaxLineBytes int
	// MaxLines is the most non-blank JSONL lines.
	MaxLines int
}

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// Validate scans data as one JSON document without a target type: syntax,
// trailing data, UTF-8, duplicate and case-variant keys (every object is
// treated like a struct), and lim. It returns nil or an *Error.
func Validate(data []byte, lim Limits) error {
	_, err := scan(data, nil, lim, false, false)
	return err
}

// Decode scans data as one JSON document against the type of v and, when it
// passes, decodes it into v with encoding/json. v must be a non-nil pointer.
// It returns nil, an *Error describing the input's problem, or (for a bad v)
// a plain error.
func Decode(data []byte, v any, lim Limits) error {
	return Decoder{Limits: lim}.Decode(data, v)
}

// A Decoder decodes single JSON documents as Decode does, with options. The
// zero value is Decode with zero Limits. A Decoder is a value: it is safe for
// concurrent use.
type Decoder struct {
	// Limits bounds the input, as for Decode.
	Limits Limits
	// ProtoJSON accepts, for values decoded into Go types, the spellings
	// protobuf's JSON mapping accepts beside the canonical ones, as Google
	// APIs' REST endpoints do: a snake_case key for a struct field whose JSON
	// name is lowerCamel ("max_output_tokens" for "maxOutputTokens"; both in
	// one object are a duplicate), a whole number written with a fraction or
	// an exponent for an integer field ("1.0", "1e3"), and base64 for a
	// []byte in the URL-safe alphabet or without padding. They are rewritten
	// into the canonical form before encoding/json decodes the input.
	ProtoJSON bool
}

// Decode scans data as one JSON document against the type of v and, when it
// passes, decodes it into v with encoding/json. v must be a non-nil pointer.
// It returns nil, an *Error describing the input's problem, or (for a bad v)
// a plain error.
func (d Decoder) Decode(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("jsonstrict.Decode: target must be a non-nil pointer, got %T", v)
	}
	plan := flatPlanOf(rv.Type().Elem())
	sc, err := scan(data, rv.Type().Elem(), d.Limits, d.ProtoJSON, plan != nil)
	if err != nil {
		return err
	}
	if plan != nil && len(sc.edits) == 0 {
		return plan.fill(data, sc.members, rv.Elem())
	}
	return unmarshal(apply(data, sc.edits), v)
}

// unmarshal runs encoding/json on input that already passed the scan. It can
// still fail where the scan does not look (a custom UnmarshalJSON, a field
// promotion the scan resolved differently), so its errors are reported as
// input errors with whatever location encoding/json gives.
func unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		e := &Error{Kind: Type, Msg: err.Error()}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			e.Path, e.Offset = te.Field, te.Offset
			e.Msg = fmt.Sprintf("cannot use JSON %s as %s", te.Value, te.Type)
		}
		return e
	}
	return nil
}

// DecodeLines decodes a JSONL input: each non-blank line is one JSON document
// decoded into a new T (with Decode's checks) and passed to fn with its
// 1-based line number. Lines end with "\n" or "\r\n"; blank lines (only
// whitespace) are skipped, so a final newline is fine. It stops at the first
// problem: an *Error with Line set for the input, or fn's error unchanged.
// An input with no non-blank line is an *Error of Kind Syntax.
func DecodeLines[T any](data []byte, lim Limits, fn func(line int, v *T) error) error {
	lim = lim.withDefaults()
	target := reflect.TypeFor[T]()
	plan := flatPlanOf(target)
	n, count := 0, 0
	for len(data) > 0 {
		n++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if lim.MaxLineBytes > 0 && len(line) > lim.MaxLineBytes {
			return &Error{Kind: Limit, Line: n, Msg: fmt.Sprintf("line is %d bytes, more than the limit of %d", len(line), lim.MaxLineBytes)}
		}
		if len(bytes.Trim(line, " \t\r")) == 0 {
			continue
		}
		count++
		if lim.MaxLines > 0 && count > lim.MaxLines {
			return &Error{Kind: Limit, Line: n, Msg: fmt.Sprintf("more than %d lines", lim.MaxLines)}
		}
		sc, err := scan(line, target, lim, false, plan != nil)
		if err != nil {
			err.(*Error).Line = n
			return err
		}
		v := new(T)
		if plan != nil {
			err = plan.fill(line, sc.members, reflect.ValueOf(v).Elem())
		} else {
			err = unmarshal(line, v)
		}
		if err != nil {
			err.(*Error).Line = n
			return err
		}
		if err := fn(n, v); err != nil {
			return err
		}
	}
	if count == 0 {
		return &Error{Kind: Syntax, Msg: "no JSON lines in the input"}
	}
	return nil
}

// scan runs the checker over data against target (nil: no type), returning
// nil or an *Error, and the scanner: with proto, its edits make data
// canonical; with capture (a flat target), its members are the top-level
// object's.
func scan(data []byte, target reflect.Type, lim Limits, proto, capture bool) (*scanner, error) {
	s := &scanner{data: data, lim: lim.withDefaults(), proto: proto, capture: capture}
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		return nil, s.fail(Syntax, "byte order mark (U+FEFF) before the value is not allowed")
	}
	s.skipSpace()
	if s.pos == len(data) {
		return nil, s.fail(Syntax, "empty input: expected a JSON value")
	}
	if err := s.value(target); err != nil {
		return nil, err
	}
	s.skipSpace()
	if s.pos < len(data) {
		return nil, s.fail(Trailing, fmt.Sprintf("unexpected data after the JSON value at offset %d (%s)", s.pos, describeByte(data[s.pos])))
	}
	return s, nil
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("character %q", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// segment is one step of a field path: an object key or an array index.
type segment struct {
	key   string
	index int
	isKey bool
}

// formatPath renders segments as a.b[3].c, quoting keys that are not plain
// identifiers.
func formatPath(path []segment) string {
	var b strings.Builder
	for _, s := range path {
		if !s.isKey {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
			continue
		}
		if isIdent(s.key) {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.key)
			continue
		}
		b.WriteByte('[')
		b.WriteString(strconv.Quote(s.key))
		b.WriteByte(']')
	}
	return b.String()
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c == '$' || c == '-' && i > 0,
			'a' <= c && c <= 'z', 'A' <= c && c <= 'Z',
			'0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
