package gemini

import "strings"

// ModelLimits are a model's published per-request token limits.
type ModelLimits struct {
	// InputTokens is the most input tokens one request may carry.
	InputTokens int64
	// OutputTokens is the most tokens one response may carry.
	OutputTokens int64
}

// knownModels holds the token limits Google publishes on each model's page
// (ai.google.dev/gemini-api/docs/models). They change rarely and only with a
// new model id, so they live here rather than in every deployment's config.
var knownModels = map[string]ModelLimits{
	"gemini-2.0-flash":      {InputTokens: 1_048_576, OutputTokens: 8_192},
	"gemini-2.0-flash-lite": {InputTokens: 1_048_576, OutputTokens: 8_192},
	"gemini-2.5-flash":      {InputTokens: 1_048_576, OutputTokens: 65_536},
	"gemini-2.5-flash-lite": {InputTokens: 1_048_576, OutputTokens: 65_536},
	"gemini-2.5-pro":        {InputTokens: 1_048_576, OutputTokens: 65_536},
}

// KnownModelLimits returns the published limits of model ("x" or
// "models/x"; a pinned version such as "gemini-2.0-flash-001" maps to its
// family), and false for a model gemq has no table entry for.
func KnownModelLimits(model string) (ModelLimits, bool) {
	id := strings.TrimPrefix(model, "models/")
	if l, ok := knownModels[id]; ok {
		return l, true
	}
	// Pinned versions ("-001") and previews ("-preview-06-17") share their
	// family's limits.
	for _, sep := range []string{"-preview", "-0"} {
		if i := strings.Index(id, sep); i > 0 {
			if l, ok := knownModels[id[:i]]; ok {
				return l, true
			}
		}
	}
	return ModelLimits{}, false
}
