package jsonstrict

import (
	"encoding/base64"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner is a recursive-descent JSON checker over a byte slice. Recursion is
// bounded by Limits.MaxDepth, checked before descending.
type scanner struct {
	data  []byte
	pos   int
	lim   Limits
	path  []segment
	depth int
	// exact > 0 inside a value decoded into json.RawMessage or any: its
	// keys are data (a JSON schema's properties, a function's arguments),
	// not struct fields that encoding/json would merge up to case, so they
	// are compared exactly; the consumer of the raw value checks its names.
	exact int
	// proto accepts the spellings of protobuf's JSON mapping (see
	// Decoder.ProtoJSON), recording in edits how to rewrite them into the
	// form encoding/json decodes.
	proto bool
	edits []edit
	// capture records the top-level object's members (flat targets).
	capture bool
	members []member
}

// edit replaces data[start:end] with text.
type edit struct {
	start, end int
	text       string
}

// apply returns data with the edits (in ascending, non-overlapping order)
// made, or data itself when there are none.
func apply(data []byte, edits []edit) []byte {
	if len(edits) == 0 {
		return data
	}
	out := make([]byte, 0, len(data))
	at := 0
	for _, e := range edits {
		out = append(out, data[at:e.start]...)
		out = append(out, e.text...)
		at = e.end
	}
	return append(out, data[at:]...)
}

// fail returns an *Error of kind k at the current position and path.
func (s *scanner) fail(k Kind, msg string) *Error {
	return &Error{Kind: k, Path: formatPath(s.path), Offset: int64(s.pos), Msg: msg}
}

func (s *scanner) syntax(want string) *Error {
	if s.pos >= len(s.data) {
		return s.fail(Syntax, fmt.Sprintf("unexpected end of input: expected %s", want))
	}
	return s.fail(Syntax, fmt.Sprintf("invalid %s at offset %d: expected %s", describeByte(s.data[s.pos]), s.pos, want))
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value checks one JSON value that will be decoded into t (nil: unknown).
func (s *scanner) value(t reflect.Type) error {
	t, opaque := resolve(t)
	if opaque {
		t = nil
		s.exact++
		defer func() { s.exact-- }()
	}
	if s.pos >= len(s.data) {
		return s.syntax("a value")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		if err := expect(t, "object"); err != "" {
			return s.fail(Type, err)
		}
		return s.object(t)
	case c == '[':
		if err := expect(t, "array"); err != "" {
			return s.fail(Type, err)
		}
		return s.array(t)
	case c == '"':
		if err := expect(t, "string"); err != "" {
			return s.fail(Type, err)
		}
		if s.proto && t != nil && t.Kind() == reflect.Slice {
			return s.bytes()
		}
		_, err := s.str(false)
		return err
	case c == '-' || '0' <= c && c <= '9':
		start := s.pos
		if err := s.number(); err != nil {
			return err
		}
		lit := string(s.data[start:s.pos])
		msg := checkNumber(t, lit)
		if msg != "" && s.proto {
			if whole, ok := wholeNumber(t, lit); ok {
				s.edits = append(s.edits, edit{start, s.pos, whole})
				msg = ""
			}
		}
		if msg != "" {
			s.pos = start
			return s.fail(Type, msg)
		}
		return nil
	case c == 't':
		return s.literal("true", t)
	case c == 'f':
		return s.literal("false", t)
	case c == 'n':
		return s.literal("null", nil)
	default:
		return s.syntax("a value")
	}
}

func (s *scanner) literal(word string, t reflect.Type) error {
	if !strings.HasPrefix(string(s.data[s.pos:min(len(s.data), s.pos+len(word))]), word) {
		return s.syntax("a value")
	}
	if word != "null" {
		if err := expect(t, "boolean"); err != "" {
			return s.fail(Type, err)
		}
	}
	s.pos += len(word)
	return nil
}

func (s *scanner) enter() error {
	s.depth++
	if s.depth > s.lim.MaxDepth {
		return s.fail(Limit, fmt.Sprintf("nesting deeper than the limit of %d", s.lim.MaxDepth))
	}
	return nil
}

// object checks an object decoded into t: a struct (every key must name one
// of its fields exactly: a key matching a field only up to case is unknown),
// a map (keys compared exactly), or nil (unknown type: keys are compared up
// to case, as encoding/json would match them to fields, except inside an
// opaque value, where they are data and compared exactly).
func (s *scanner) object(t reflect.Type) error {
	if err := s.enter(); err != nil {
		return err
	}
	s.pos++ // '{'
	var fields *structFields
	var elem reflect.Type
	caseSensitive := s.exact > 0 // map keys, and keys inside opaque values, are distinct even when they differ only in case
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = fieldsOf(t)
		case reflect.Map:
			elem, caseSensitive = t.Elem(), true
		}
	}
	seen := map[string]string{} // key's identity (see id below) → key as written
	n := 0
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.syntax("a string key")
		}
		keyPos := s.pos
		key, err := s.str(true)
		if err != nil {
			return err
		}
		keyEnd := s.pos
		n++
		if s.lim.MaxObjectKeys > 0 && n > s.lim.MaxObjectKeys {
			s.pos = keyPos
			return s.fail(Limit, fmt.Sprintf("object has more than %d members", s.lim.MaxObjectKeys))
		}
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.syntax("':' after the object key")
		}
		s.pos++
		s.skipSpace()
		s.path = append(s.path, segment{key: key, isKey: true})
		// id is what makes two keys the same: the struct field they name,
		// or the key itself, or (objects of unknown type) its case fold.
		id, vt := key, elem
		switch {
		case fields != nil:
			name, f, ok := fields.lookup(key, s.proto)
			if !ok {
				s.pos = keyPos
				msg := fmt.Sprintf("unknown field %q", key)
				if want, ok := fields.byFold[fold(key)]; ok {
					msg += fmt.Sprintf(" (field names are case-sensitive: did you mean %q?)", want)
				}
				return s.fail(UnknownField, msg)
			}
			if name != key {
				s.edits = append(s.edits, edit{keyPos, keyEnd, strconv.Quote(name)})
			}
			id, vt = name, nil
			if !f.quoted {
				vt = f.typ
			}
		case !caseSensitive:
			id = fold(key)
		}
		if prev, dup := seen[id]; dup {
			s.pos = keyPos
			switch {
			case prev == key:
				return s.fail(DuplicateKey, fmt.Sprintf("duplicate key %q", key))
			case fields != nil:
				return s.fail(DuplicateKey, fmt.Sprintf("duplicate key %q: the same field as %q", key, prev))
			}
			return s.fail(DuplicateKey, fmt.Sprintf("duplicate key %q: differs from %q only in case", key, prev))
		}
		seen[id] = key
		valStart := s.pos
		if err := s.value(vt); err != nil {
			return err
		}
		if s.capture && s.depth == 1 {
			s.members = append(s.members, member{id, valStart, s.pos})
		}
		s.path = s.path[:len(s.path)-1]
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.syntax("',' or '}'")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.syntax("',' or '}'")
		}
	}
}

// array checks an array decoded into t: a slice, an array, or nil.
func (s *scanner) array(t reflect.Type) error {
	if err := s.enter(); err != nil {
		return err
	}
	s.pos++ // '['
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		elem = t.Elem()
	}
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for i := 0; ; i++ {
		if s.lim.MaxArrayLen > 0 && i >= s.lim.MaxArrayLen {
			return s.fail(Limit, fmt.Sprintf("array has more than %d elements", s.lim.MaxArrayLen))
		}
		s.path = append(s.path, segment{index: i})
		s.skipSpace()
		if err := s.value(elem); err != nil {
			return err
		}
		s.path = s.path[:len(s.path)-1]
		s.skipSpace()
		if s.pos >= len(s.data) {
			return s.syntax("',' or ']'")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return nil
		default:
			return s.syntax("',' or ']'")
		}
	}
}

// str checks a string starting at the opening quote and, when decode is set,
// returns its decoded value.
func (s *scanner) str(decode bool) (string, error) {
	start := s.pos
	s.pos++ // '"'
	var b []byte
	for {
		if b == nil {
			for s.pos < len(s.data) && plainString[s.data[s.pos]] {
				s.pos++
			}
		}
		if s.pos >= len(s.data) {
			return "", s.syntax("'\"' closing the string")
		}
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			if n := s.pos - start - 2; s.lim.MaxStringBytes > 0 && n > s.lim.MaxStringBytes {
				s.pos = start
				return "", s.fail(Limit, fmt.Sprintf("string of %d bytes is longer than the limit of %d", n, s.lim.MaxStringBytes))
			}
			if !decode {
				return "", nil
			}
			if b == nil {
				return string(s.data[start+1 : s.pos-1]), nil
			}
			return string(b), nil
		case c < 0x20:
			return "", s.fail(Syntax, fmt.Sprintf("control character 0x%02x in a string at offset %d (escape it)", c, s.pos))
		case c == '\\':
			if decode && b == nil {
				b = append([]byte(nil), s.data[start+1:s.pos]...)
			}
			r, err := s.escape()
			if err != nil {
				return "", err
			}
			if decode {
				b = utf8.AppendRune(b, r)
			}
		case c < utf8.RuneSelf:
			if b != nil {
				b = append(b, c)
			}
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", s.fail(InvalidUTF8, fmt.Sprintf("invalid UTF-8 byte 0x%02x in a string at offset %d", c, s.pos))
			}
			if b != nil {
				b = append(b, s.data[s.pos:s.pos+size]...)
			}
			s.pos += size
		}
	}
}

// plainString marks the bytes a string holds as they are: printable ASCII
// other than the quote and the backslash.
var plainString = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escape reads one escape sequence at the backslash and returns its rune. A
// \u escape for a surrogate must be a valid high+low pair.
func (s *scanner) escape() (rune, error) {
	at := s.pos
	if s.pos+1 >= len(s.data) {
		s.pos = len(s.data)
		return 0, s.syntax("an escape sequence")
	}
	c := s.data[s.pos+1]
	s.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, ok := s.hex4()
		if !ok {
			s.pos = at
			return 0, s.fail(Syntax, fmt.Sprintf("invalid \\u escape at offset %d", at))
		}
		if !utf16.IsSurrogate(r) {
			return r, nil
		}
		if r < 0xDC00 && s.pos+1 < len(s.data) && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
			s.pos += 2
			r2, ok := s.hex4()
			if ok {
				if pair := utf16.DecodeRune(r, r2); pair != unicode.ReplacementChar {
					return pair, nil
				}
			}
		}
		s.pos = at
		return 0, s.fail(InvalidUTF8, fmt.Sprintf("lone UTF-16 surrogate escape at offset %d", at))
	default:
		s.pos = at
		return 0, s.fail(Syntax, fmt.Sprintf("invalid escape sequence \\%s at offset %d", printable(c), at))
	}
}

func printable(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return string(c)
	}
	return fmt.Sprintf("x%02x", c)
}

func (s *scanner) hex4() (rune, bool) {
	if s.pos+4 > len(s.data) {
		return 0, false
	}
	var r rune
	for _, c := range s.data[s.pos : s.pos+4] {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	s.pos += 4
	return r, true
}

// number checks a number literal: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	start := s.pos
	d := s.data
	if s.pos < len(d) && d[s.pos] == '-' {
		s.pos++
	}
	digits := func() bool {
		begin := s.pos
		for s.pos < len(d) && '0' <= d[s.pos] && d[s.pos] <= '9' {
			s.pos++
		}
		return s.pos > begin
	}
	switch {
	case s.pos < len(d) && d[s.pos] == '0':
		s.pos++
	case s.pos < len(d) && '1' <= d[s.pos] && d[s.pos] <= '9':
		digits()
	default:
		return s.syntax("a digit")
	}
	if s.pos < len(d) && d[s.pos] == '.' {
		s.pos++
		if !digits() {
			return s.syntax("a digit after the decimal point")
		}
	}
	if s.pos < len(d) && (d[s.pos] == 'e' || d[s.pos] == 'E') {
		s.pos++
		if s.pos < len(d) && (d[s.pos] == '+' || d[s.pos] == '-') {
			s.pos++
		}
		if !digits() {
			return s.syntax("a digit in the exponent")
		}
	}
	if n := s.pos - start; s.lim.MaxStringBytes > 0 && n > s.lim.MaxStringBytes {
		s.pos = start
		return s.fail(Limit, fmt.Sprintf("number of %d bytes is longer than the limit of %d", n, s.lim.MaxStringBytes))
	}
	return nil
}

// checkNumber says why the number literal lit does not fit t, or "".
func checkNumber(t reflect.Type, lit string) string {
	var err error
	if t == nil || t.Kind() == reflect.Interface {
		// Undecoded or decoded as float64: a literal beyond float64's range
		// would fail in encoding/json or in whoever reads it later.
		if _, err := strconv.ParseFloat(lit, 64); err != nil {
			return fmt.Sprintf("number %s is out of range", lit)
		}
		return ""
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		_, err = strconv.ParseInt(lit, 10, t.Bits())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		_, err = strconv.ParseUint(lit, 10, t.Bits())
	case reflect.Float32, reflect.Float64:
		_, err = strconv.ParseFloat(lit, t.Bits())
	default:
		return expect(t, "number")
	}
	if err != nil {
		return fmt.Sprintf("number %s does not fit %s", lit, kindName(t))
	}
	return ""
}

// fold maps s to a canonical case-folded form: two keys that encoding/json
// would match to the same struct field fold to the same string.
func fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < m {
				m = f
			}
		}
		b.WriteRune(m)
	}
	return b.String()
}

// bytes checks a string decoded into a []byte under proto: base64 in the
// standard or URL-safe alphabet, padded or not, as protobuf's JSON mapping
// accepts; a form encoding/json does not decode (it takes standard, padded
// base64 only) is rewritten into one it does.
func (s *scanner) bytes() error {
	start := s.pos
	text, err := s.str(true)
	if err != nil {
		return err
	}
	trimmed := strings.TrimRight(text, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(trimmed, "-_") {
		enc = base64.RawURLEncoding
	}
	b, derr := enc.DecodeString(trimmed)
	if derr != nil {
		s.pos = start
		return s.fail(Type, fmt.Sprintf("invalid base64: %v", derr))
	}
	if std := base64.StdEncoding.EncodeToString(b); std != text {
		s.edits = append(s.edits, edit{start, s.pos, `"` + std + `"`})
	}
	return nil
}

// wholeNumber returns the integer literal for lit when t is an integer type
// and lit a whole number within its range written otherwise ("1.0",
// "1e3"), as protobuf's JSON mapping accepts.
func wholeNumber(t reflect.Type, lit string) (string, bool) {
	if t == nil {
		return "", false
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return "", false
	}
	whole := strconv.FormatFloat(f, 'f', -1, 64)
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		_, err = strconv.ParseInt(whole, 10, t.Bits())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		_, err = strconv.ParseUint(whole, 10, t.Bits())
	default:
		return "", false
	}
	return whole, err == nil
}
