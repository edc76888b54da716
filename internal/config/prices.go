package config

import "github.com/gemq-dev/gemq/internal/tier"

// DefaultPrices are the Gemini API's paid-tier standard prices of the models
// gemq's quota examples name, in US dollars per million tokens, for prompts
// up to 200k tokens (2.5 Pro charges more above; the estimate does not
// model it), from https://ai.google.dev/gemini-api/docs/pricing, read
// 2026-12-02. Prices change: GEMQ_PRICES overrides them. Thinking tokens
// are billed as output. Flex and batch cost half of these, priority up to
// twice (tier.Factor).
var DefaultPrices = map[string]tier.Price{
	"gemini-2.5-pro":        {Input: 1.25, Cached: 0.125, Output: 10},
	"gemini-2.5-flash":      {Input: 0.30, Cached: 0.03, Output: 2.50},
	"gemini-2.5-flash-lite": {Input: 0.10, Cached: 0.01, Output: 0.40},
	"gemini-2.0-flash":      {Input: 0.10, Cached: 0.025, Output: 0.40},
}
