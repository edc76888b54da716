package gemini

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalTokenizerModelFile: the genai tokenizer is loaded only from the
// file the deployment provides, and only if it is the model genai pins; a
// missing or different file is a clear error and nothing is placed in
// genai's cache (so genai never falls back to a download or a wrong model).
func TestLocalTokenizerModelFile(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // os.TempDir: genai's cache directory goes here
	if _, err := NewLocalTokenizer(filepath.Join(tmp, "missing.model")); !errors.Is(err, ErrTokenizerModel) {
		t.Fatalf("missing file: %v, want ErrTokenizerModel", err)
	}
	wrong := filepath.Join(tmp, "wrong.model")
	if err := os.WriteFile(wrong, []byte("not a sentencepiece model"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewLocalTokenizer(wrong)
	if !errors.Is(err, ErrTokenizerModel) || !strings.Contains(err.Error(), gemma3ModelHash) {
		t.Fatalf("wrong file: %v, want ErrTokenizerModel naming the expected hash", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "vertexai_tokenizer_model")); !os.IsNotExist(err) {
		t.Fatalf("a rejected file reached genai's cache directory (stat: %v)", err)
	}
}
