package gemini

import "testing"

func TestKnownModelLimits(t *testing.T) {
	tests := []struct {
		model string
		want  int64
		ok    bool
	}{
		{"gemini-2.5-flash", 1_048_576, true},
		{"models/gemini-2.5-pro", 1_048_576, true},
		{"gemini-2.0-flash-001", 1_048_576, true},
		{"gemini-2.5-flash-preview-05-20", 1_048_576, true},
		{"gemini-9-ultra", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := KnownModelLimits(tt.model)
		if ok != tt.ok || got.InputTokens != tt.want {
			t.Errorf("KnownModelLimits(%q) = %d, %v; want %d, %v", tt.model, got.InputTokens, ok, tt.want, tt.ok)
		}
	}
	if l, _ := KnownModelLimits("gemini-2.0-flash"); l.OutputTokens != 8_192 {
		t.Errorf("gemini-2.0-flash output limit = %d, want 8192", l.OutputTokens)
	}
}
