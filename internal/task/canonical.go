package task

import (
	"encoding/json"
	"errors"
)

// errNotJSON is appendCanonical's error for text whose strings or brackets
// do not close.
var errNotJSON = errors.New("not a complete JSON value")

// appendCanonical appends src, a JSON text, to dst in the form json.Marshal
// writes a json.RawMessage: without the whitespace between tokens, with <,
// > and & and the line separators U+2028 and U+2029 escaped (\u003c, …,
// \u2029). It reads src once and, unlike json.Marshal, does not re-check its
// grammar: src must be JSON that a parser has accepted (Decode's decoder,
// internal/gemini.ParseRequest). It reports errNotJSON when a string or a
// bracket is left open, or the brackets do not pair up.
func appendCanonical(dst, src []byte) ([]byte, error) {
	const hex = "0123456789abcdef"
	start, depth, inString := 0, 0, false
	for i := 0; i < len(src); i++ {
		if inString {
			for i < len(src) && !stringSpecial[src[i]] {
				i++
			}
			if i == len(src) {
				break
			}
			switch c := src[i]; {
			case c == '\\':
				i++
			case c == '"':
				inString = false
			case c == '<' || c == '>' || c == '&':
				dst = append(dst, src[start:i]...)
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
				start = i + 1
			case c == 0xE2 && i+2 < len(src) && src[i+1] == 0x80 && src[i+2]&^1 == 0xA8:
				dst = append(dst, src[start:i]...)
				dst = append(dst, '\\', 'u', '2', '0', '2', hex[src[i+2]&0xF])
				start = i + 3
				i += 2
			}
			continue
		}
		switch c := src[i]; c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth < 0 {
				return dst, errNotJSON
			}
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		}
	}
	if inString || depth != 0 {
		return dst, errNotJSON
	}
	return append(dst, src[start:]...), nil
}

// stringSpecial marks the bytes appendCanonical must look at inside a
// string: its end, an escape, and the first bytes of what it escapes.
var stringSpecial = func() (t [256]bool) {
	for _, c := range []byte{'"', '\\', '<', '>', '&', 0xE2} {
		t[c] = true
	}
	return t
}()

// canonical is appendCanonical into a new slice; src itself when it is not
// complete JSON.
func canonical(src json.RawMessage) []byte {
	out, err := appendCanonical(make([]byte, 0, len(src)+16), src)
	if err != nil {
		return src
	}
	return out
}
