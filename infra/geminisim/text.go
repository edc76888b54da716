package geminisim

import (
	"encoding/json"
	"hash/fnv"
	"math/rand/v2"
	"strings"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/internal/gemini"
)

// vocabulary: three-letter words, so n words joined by spaces are exactly n tokens by gemini.TextTokens.
var vocabulary = strings.Fields(`the and for are but not you all any can had her was one our out day get has him
his how man new now old see two way who boy did its let put say she too use art bay cat dog ear eye fan fig
fox gem hat ice jam jet key kit lab map mix net oak owl pan pen pie pin pot ray red row sea sky sun tan tea
tip top toy van war wax web win yak zip`)

// promptSeed hashes everything that shapes an answer, so equal requests get equal answers.
func promptSeed(model string, r *gemini.Request) uint64 {
	h := fnv.New64a()
	h.Write([]byte(model))
	b, _ := json.Marshal(r)
	h.Write(b)
	return h.Sum64()
}

func words(rng *rand.Rand, n int) string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = vocabulary[rng.IntN(len(vocabulary))]
	}
	return strings.Join(ws, " ")
}

// answer is one candidate's text and its token count.
type answer struct {
	text   string
	tokens int64
	finish string // STOP or MAX_TOKENS
}

// generate makes a candidate's text: 8 to 63 tokens of words chosen by the prompt's hash (or a JSON value
// following the response schema when JSON is asked for), cut to budget tokens with finishReason MAX_TOKENS.
func generate(rng *rand.Rand, g *gemini.GenerationConfig, budget int64) answer {
	natural := 8 + rng.IntN(56)
	var text string
	if g != nil && (g.ResponseMIMEType == "application/json" || g.ResponseMIMEType == "text/x.enum") {
		schema := schemaOf(g)
		if g.ResponseMIMEType == "text/x.enum" {
			text = enumValue(rng, schema)
		} else {
			// Shrink the strings until the JSON fits the budget; only an unfittable structure is truncated.
			for _, n := range []int{4, 1} {
				b, _ := json.Marshal(jsonValue(rng, schema, n, 0))
				text = string(b)
				if gemini.TextTokens(text) <= budget {
					break
				}
			}
		}
	} else {
		text = words(rng, natural)
	}
	if t := gemini.TextTokens(text); t <= budget {
		return answer{text: text, tokens: t, finish: "STOP"}
	}
	cut := truncateTokens(text, budget)
	return answer{text: cut, tokens: gemini.TextTokens(cut), finish: "MAX_TOKENS"}
}

// truncateTokens returns the longest prefix of s (on a rune boundary) of at most max tokens.
func truncateTokens(s string, max int64) string {
	if max <= 0 {
		return ""
	}
	lo, hi := 0, len(s)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		for mid > lo && !utf8Start(s, mid) {
			mid--
		}
		if mid == lo {
			break
		}
		if gemini.TextTokens(s[:mid]) <= max {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return s[:lo]
}

func utf8Start(s string, i int) bool { return i == len(s) || s[i]&0xC0 != 0x80 }

// schemaOf returns the response schema as generic JSON (responseSchema in OpenAPI form, or
// responseJsonSchema), or nil.
func schemaOf(g *gemini.GenerationConfig) map[string]any {
	var src any
	if g.ResponseSchema != nil {
		src = g.ResponseSchema
	} else if g.ResponseJSONSchema != nil {
		src = g.ResponseJSONSchema
	} else {
		return nil
	}
	b, err := json.Marshal(src)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func enumValue(rng *rand.Rand, schema map[string]any) string {
	if vs, ok := schema["enum"].([]any); ok && len(vs) > 0 {
		if s, ok := vs[rng.IntN(len(vs))].(string); ok {
			return s
		}
	}
	return words(rng, 1)
}

// jsonValue builds a value that satisfies the schema's type, properties (all of them), items, and enum;
// with no schema, an object {"text": "..."}.
func jsonValue(rng *rand.Rand, schema map[string]any, strWords, depth int) any {
	if schema == nil {
		return map[string]any{"text": words(rng, strWords)}
	}
	if vs, ok := schema["enum"].([]any); ok && len(vs) > 0 {
		return vs[rng.IntN(len(vs))]
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if alts, ok := schema[k].([]any); ok && len(alts) > 0 {
			if m, ok := alts[0].(map[string]any); ok {
				return jsonValue(rng, m, strWords, depth)
			}
		}
	}
	typ, _ := schema["type"].(string)
	if ts, ok := schema["type"].([]any); ok && len(ts) > 0 { // JSON Schema type lists, e.g. ["string","null"]
		typ, _ = ts[0].(string)
	}
	if depth > 8 {
		return nil
	}
	switch strings.ToLower(typ) {
	case "object", "":
		props, _ := schema["properties"].(map[string]any)
		out := make(map[string]any, len(props))
		for name, p := range props {
			pm, _ := p.(map[string]any)
			out[name] = jsonValue(rng, pm, strWords, depth+1)
		}
		if typ == "" && len(props) == 0 {
			return words(rng, strWords)
		}
		return out
	case "array":
		items, _ := schema["items"].(map[string]any)
		n := 1 + rng.IntN(3)
		if v, ok := schema["minItems"]; ok {
			if f, ok := toInt(v); ok && f > n {
				n = f
			}
		}
		out := make([]any, n)
		for i := range out {
			out[i] = jsonValue(rng, items, strWords, depth+1)
		}
		return out
	case "integer":
		return rng.IntN(100)
	case "number":
		return float64(rng.IntN(10000)) / 100
	case "boolean":
		return rng.IntN(2) == 0
	case "null":
		return nil
	}
	return words(rng, strWords)
}

func toInt(v any) (int, bool) {
	switch x := v.(type) {
	case float64:
		return int(x), true
	case string: // OpenAPI-style schemas carry int64 as strings
		n := 0
		for _, c := range x {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	return 0, false
}

// CountTokens counts input tokens with the stand-in's default tokenizer (CountTokensIndependent), before
// any Options.TokenSkew.
func CountTokens(system *genai.Content, contents []*genai.Content) int64 {
	return CountTokensIndependent(system, contents)
}
