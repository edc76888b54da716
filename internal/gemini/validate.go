package gemini

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"google.golang.org/genai"
)

// Validate checks the values of a parsed request the way the Gemini API does before it generates anything,
// so that a request bound to fail is refused at ingest instead of costing a permit. It returns the first
// problem as a *FieldError naming the field, e.g. "request.generationConfig.temperature: must be between 0
// and 2, got 3". It checks: contents present; every content's role ("user", "model" or empty) and parts
// (each with exactly one kind of data; inline data with a MIME type and data; file data with a URI); a
// non-empty prompt; generation settings in range (temperature [0,2], topP [0,1], topK ≥ 1 and whole,
// candidateCount [1,8], maxOutputTokens ≥ 1, presence/frequency penalty [-2,2), logprobs [0,20] with
// responseLogprobs, at most 5 non-empty stop sequences, a supported responseMimeType, a response schema only
// with a JSON or enum MIME type and never two schemas, thinkingBudget ≥ -1); safety settings with category and
// threshold, each category once; a function calling mode from the known set; a cachedContent name of the
// form "cachedContents/…". The model's input limit is not checked here (it depends on the model).
func (r *Request) Validate() error {
	if r == nil {
		return fieldErr("request", "is missing")
	}
	if len(r.Contents) == 0 {
		return fieldErr("request.contents", "is required: contents is not specified")
	}
	hasData := false
	for i, c := range r.Contents {
		path := fmt.Sprintf("request.contents[%d]", i)
		if c == nil {
			return fieldErr(path, "is null")
		}
		switch c.Role {
		case "", "user", "model":
		default:
			return fieldErr(path+".role", "must be \"user\" or \"model\", got %q", c.Role)
		}
		ok, err := validateParts(path, c.Parts)
		if err != nil {
			return err
		}
		hasData = hasData || ok
	}
	if !hasData {
		return fieldErr("request.contents", "prompt is empty")
	}
	if si := r.SystemInstruction; si != nil {
		if _, err := validateParts("request.systemInstruction", si.Parts); err != nil {
			return err
		}
	}
	if err := r.GenerationConfig.validate("request.generationConfig"); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, s := range r.SafetySettings {
		path := fmt.Sprintf("request.safetySettings[%d]", i)
		switch {
		case s == nil:
			return fieldErr(path, "is null")
		case s.Category == "":
			return fieldErr(path+".category", "is required")
		case s.Threshold == "":
			return fieldErr(path+".threshold", "is required")
		case seen[string(s.Category)]:
			return fieldErr(path+".category", "%s is set more than once", s.Category)
		}
		seen[string(s.Category)] = true
	}
	for i, t := range r.Tools {
		if t == nil {
			return fieldErr(fmt.Sprintf("request.tools[%d]", i), "is null")
		}
	}
	if tc := r.ToolConfig; tc != nil && tc.FunctionCallingConfig != nil {
		switch m := tc.FunctionCallingConfig.Mode; m {
		case "", "MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED":
		default:
			return fieldErr("request.toolConfig.functionCallingConfig.mode", "unknown mode %q", m)
		}
	}
	if cc := r.CachedContent; cc != "" && (!strings.HasPrefix(cc, "cachedContents/") || len(cc) == len("cachedContents/")) {
		return fieldErr("request.cachedContent", "must be a name like \"cachedContents/abc123\", got %q", cc)
	}
	return nil
}

// validateParts reports whether the parts carry any data (non-blank text or another kind of data).
func validateParts(path string, parts []*genai.Part) (bool, error) {
	if len(parts) == 0 {
		return false, fieldErr(path+".parts", "must not be empty")
	}
	data := false
	for j, p := range parts {
		pp := fmt.Sprintf("%s.parts[%d]", path, j)
		if p == nil {
			return false, fieldErr(pp, "is null")
		}
		kinds := 0
		if p.Text != "" {
			kinds++
			if strings.TrimSpace(p.Text) != "" {
				data = true
			}
		}
		if p.InlineData != nil {
			kinds++
			data = true
			if p.InlineData.MIMEType == "" {
				return false, fieldErr(pp+".inlineData.mimeType", "is required")
			}
			if len(p.InlineData.Data) == 0 {
				return false, fieldErr(pp+".inlineData.data", "is required")
			}
		}
		if p.FileData != nil {
			kinds++
			data = true
			if p.FileData.FileURI == "" {
				return false, fieldErr(pp+".fileData.fileUri", "is required")
			}
		}
		if p.FunctionCall != nil {
			kinds++
			data = true
			if p.FunctionCall.Name == "" {
				return false, fieldErr(pp+".functionCall.name", "is required")
			}
		}
		if p.FunctionResponse != nil {
			kinds++
			data = true
			if p.FunctionResponse.Name == "" {
				return false, fieldErr(pp+".functionResponse.name", "is required")
			}
		}
		if p.ExecutableCode != nil {
			kinds++
			data = true
		}
		if p.CodeExecutionResult != nil {
			kinds++
			data = true
		}
		switch {
		case kinds == 0:
			return false, fieldErr(pp, "part has no data (text, inlineData, fileData, functionCall, ...)")
		case kinds > 1:
			return false, fieldErr(pp, "part must hold exactly one kind of data, got %d", kinds)
		}
	}
	return data, nil
}

func (g *GenerationConfig) validate(path string) error {
	if g == nil {
		return nil
	}
	if err := rangeCheck(path+".temperature", g.Temperature, 0, 2, true); err != nil {
		return err
	}
	if err := rangeCheck(path+".topP", g.TopP, 0, 1, true); err != nil {
		return err
	}
	if k := g.TopK; k != nil && (*k < 1 || float64(*k) != math.Trunc(float64(*k))) {
		return fieldErr(path+".topK", "must be a whole number ≥ 1, got %v", *k)
	}
	if c := g.CandidateCount; c != nil && (*c < 1 || *c > 8) {
		return fieldErr(path+".candidateCount", "must be between 1 and 8, got %d", *c)
	}
	if m := g.MaxOutputTokens; m != nil && *m < 1 {
		return fieldErr(path+".maxOutputTokens", "must be at least 1, got %d", *m)
	}
	if err := rangeCheck(path+".presencePenalty", g.PresencePenalty, -2, 2, false); err != nil {
		return err
	}
	if err := rangeCheck(path+".frequencyPenalty", g.FrequencyPenalty, -2, 2, false); err != nil {
		return err
	}
	if l := g.Logprobs; l != nil {
		if *l < 0 || *l > 20 {
			return fieldErr(path+".logprobs", "must be between 0 and 20, got %d", *l)
		}
		if !g.ResponseLogprobs {
			return fieldErr(path+".logprobs", "is only valid with responseLogprobs set to true")
		}
	}
	if len(g.StopSequences) > 5 {
		return fieldErr(path+".stopSequences", "at most 5 stop sequences are allowed, got %d", len(g.StopSequences))
	}
	for i, s := range g.StopSequences {
		if s == "" {
			return fieldErr(fmt.Sprintf("%s.stopSequences[%d]", path, i), "must not be empty")
		}
	}
	switch g.ResponseMIMEType {
	case "", "text/plain", "application/json", "text/x.enum":
	default:
		return fieldErr(path+".responseMimeType", "unsupported MIME type %q (allowed: text/plain, application/json, text/x.enum)", g.ResponseMIMEType)
	}
	if g.ResponseSchema != nil || g.ResponseJSONSchema != nil {
		name := "responseSchema"
		if g.ResponseSchema == nil {
			name = "responseJsonSchema"
		}
		if g.ResponseSchema != nil && g.ResponseJSONSchema != nil {
			return fieldErr(path+".responseJsonSchema", "cannot be set together with responseSchema")
		}
		if g.ResponseMIMEType != "application/json" && g.ResponseMIMEType != "text/x.enum" {
			return fieldErr(path+"."+name, "requires responseMimeType application/json or text/x.enum")
		}
	}
	if tc := g.ThinkingConfig; tc != nil && tc.ThinkingBudget != nil && *tc.ThinkingBudget < -1 {
		return fieldErr(path+".thinkingConfig.thinkingBudget", "must be -1 (dynamic), 0 (off) or positive, got %d", *tc.ThinkingBudget)
	}
	return nil
}

// rangeCheck checks lo ≤ v ≤ hi (or lo ≤ v < hi when the upper bound is exclusive).
func rangeCheck(path string, v *float32, lo, hi float64, hiInclusive bool) error {
	if v == nil {
		return nil
	}
	f := float64(*v)
	if math.IsNaN(f) || f < lo || f > hi || (!hiInclusive && f == hi) {
		bracket := "]"
		if !hiInclusive {
			bracket = ")"
		}
		return fieldErr(path, "must be in [%v, %v%s, got %v", lo, hi, bracket, *v)
	}
	return nil
}

// ModelID returns the bare model id for "gemini-2.5-flash" or "models/gemini-2.5-flash" (the two forms the
// Gemini API accepts), or an error for an empty name or one with characters a model id never has.
func ModelID(model string) (string, error) {
	id := strings.TrimPrefix(model, "models/")
	if id == "" {
		return "", errors.New("gemini: model name is empty")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return "", fmt.Errorf("gemini: invalid model name %q", model)
		}
	}
	return id, nil
}
