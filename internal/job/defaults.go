package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/jsonstrict"
)

// request returns the item's request with the job's defaults applied, or
// the error for a missing or non-object request.
func (it located) request(sys, gen json.RawMessage) (json.RawMessage, *Error) {
	raw := bytes.TrimSpace(it.Request)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, it.requestErr("request", "is required: a GenerateContentRequest object")
	}
	if raw[0] != '{' {
		return nil, it.requestErr("request", "must be a JSON object (a GenerateContentRequest)")
	}
	merged, err := applyDefaults(raw, sys, gen)
	if err != nil {
		return nil, it.requestErr("request", err.Error())
	}
	return merged, nil
}

// checkDefaults validates the job-level system instruction and generation
// config on their own, so their errors name the job-level field instead of
// every request.
func checkDefaults(sys, gen json.RawMessage) *Error {
	if isNull(sys) && isNull(gen) {
		return nil
	}
	probe := map[string]json.RawMessage{"contents": json.RawMessage(`[{"role":"user","parts":[{"text":"x"}]}]`)}
	if !isNull(sys) {
		probe["systemInstruction"] = sys
	}
	if !isNull(gen) {
		probe["generationConfig"] = gen
	}
	raw, err := json.Marshal(probe)
	if err != nil {
		return invalid("", "defaults", "invalid system_instruction or generation_config")
	}
	req, err := gemini.ParseRequest(raw)
	if err == nil {
		err = req.Validate()
	}
	if err == nil {
		return nil
	}
	field, msg := "", err.Error()
	var fe *gemini.FieldError
	if errors.As(err, &fe) {
		msg = fe.Message
		switch {
		case strings.HasPrefix(fe.Field, "request.systemInstruction"):
			field = "system_instruction" + strings.TrimPrefix(fe.Field, "request.systemInstruction")
		case strings.HasPrefix(fe.Field, "request.generationConfig"):
			field = "generation_config" + strings.TrimPrefix(fe.Field, "request.generationConfig")
		}
	}
	if field == "" {
		field = "generation_config"
		if !isNull(sys) && isNull(gen) {
			field = "system_instruction"
		}
	}
	return invalid(field, "defaults", field+": "+msg)
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// applyDefaults returns the request with the job's defaults: the system
// instruction when the request has none, and each top-level generation
// config field the request does not set itself (its own fields win; nested
// objects such as thinkingConfig are replaced whole, not merged). Field
// names match whether written lowerCamel or snake_case.
func applyDefaults(raw, sys, gen json.RawMessage) (json.RawMessage, error) {
	if isNull(sys) && isNull(gen) {
		return raw, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("must be a JSON object: %w", err)
	}
	find := func(names ...string) string {
		for _, n := range names {
			if v, ok := m[n]; ok && !isNull(v) {
				return n
			}
		}
		return ""
	}
	if !isNull(sys) && find("systemInstruction", "system_instruction") == "" {
		delete(m, "system_instruction")
		m["systemInstruction"] = sys
	}
	if !isNull(gen) {
		if k := find("generationConfig", "generation_config"); k == "" {
			delete(m, "generation_config")
			m["generationConfig"] = gen
		} else {
			var own, def map[string]json.RawMessage
			if err := json.Unmarshal(m[k], &own); err != nil {
				return nil, fmt.Errorf("%s must be a JSON object", k)
			}
			if err := json.Unmarshal(gen, &def); err != nil {
				return nil, errors.New("generation_config must be a JSON object")
			}
			have := make(map[string]bool, len(own))
			for name := range own {
				have[jsonstrict.ProtoName(name)] = true
			}
			for name, v := range def {
				if !have[jsonstrict.ProtoName(name)] {
					own[name] = v
				}
			}
			b, err := json.Marshal(own)
			if err != nil {
				return nil, fmt.Errorf("merge %s: %w", k, err)
			}
			m[k] = b
		}
	}
	return json.Marshal(m)
}
