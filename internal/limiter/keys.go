package limiter

import (
	"strconv"
	"strings"
	"time"
)

// scopePrefix returns "gemq:{<project>/<model>}", the prefix of every key of
// scope s. The names are percent-escaped outside [A-Za-z0-9._@:-], so '{',
// '}' and '/' can never break the hash tag or make two scopes share keys.
func scopePrefix(s Scope) string {
	return "gemq:{" + escapeKey(s.Project) + "/" + escapeKey(s.Model) + "}"
}

func escapeKey(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == '-', c == '@', c == ':':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// metaKey is the scope's HASH of counters, heads, day counters and cooldown.
func metaKey(prefix string) string { return prefix + ":meta" }

// logKey is the LIST of admissions shared by the sliding dimensions.
func logKey(prefix string) string { return prefix + ":log" }

// dayField is the field of metaKey counting a daily dimension for the
// Pacific day starting at start.
func dayField(dim string, start time.Time) string {
	return "d:" + dim + ":" + strconv.FormatInt(start.UnixMilli(), 10)
}

// genKey is the scope's generation: written when the scope's state is
// created and kept far longer than meta, so a script that finds meta gone
// can tell an idle scope (generation present) from lost state.
func genKey(prefix string) string { return prefix + ":gen" }

// estKey is the HASH of learned estimate corrections, one field per kind.
func estKey(prefix string) string { return prefix + ":est" }

// permitKey is the state of one permit.
func permitKey(prefix, id string) string { return prefix + ":p:" + id }
