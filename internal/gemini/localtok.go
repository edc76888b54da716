package gemini

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/genai"
	"google.golang.org/genai/tokenizer"
)

// genai's local tokenizer (google.golang.org/genai/tokenizer) counts text with Gemma 3's SentencePiece
// model, which it maps every Gemini 2.x model to. It downloads that model at first use from a URL it pins,
// checks it against a SHA-256 it pins, and caches it in os.TempDir()/vertexai_tokenizer_model/<SHA-256 of the
// URL> (tokenizer.go, loadModelData, genai v1.77.0). gemq never lets it download: the deployment provides the
// file (GEMQ_TOKENIZER_MODEL), which is checked against the same hash and placed in that cache first.
const (
	gemma3ModelURL  = "https://raw.githubusercontent.com/google/gemma_pytorch/014acb7ac4563a5f77c76d7ff98f31b568c16508/tokenizer/gemma3_cleaned_262144_v2.spiece.model"
	gemma3ModelHash = "1299c11d7cf632ef3b4e11937501358ada021bbdf7c47638d13c0ee982f2e79c"
	// tokenizerModel is the model whose tokenizer is loaded: every Gemini 2.x model shares it.
	tokenizerModel = "gemini-2.5-flash"
)

// ErrTokenizerModel is returned (wrapped) when the tokenizer's model file is missing or not the pinned one.
var ErrTokenizerModel = errors.New("genai tokenizer model file")

// LocalTokenizer estimates input tokens with genai's local tokenizer for text (and function calls and
// responses), and media parts at Gemini's documented rates as EstimateInputTokens does. Safe for concurrent
// use.
type LocalTokenizer struct {
	tok *tokenizer.LocalTokenizer
}

// NewLocalTokenizer loads Gemma 3's SentencePiece model from path (gemma3_cleaned_262144_v2.spiece.model,
// SHA-256 1299c11d…2e79c: the file genai's tokenizer would download). Errors wrap ErrTokenizerModel when the
// file is missing or differs; nothing is downloaded.
func NewLocalTokenizer(path string) (*LocalTokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenizerModel, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != gemma3ModelHash {
		return nil, fmt.Errorf("%w: %s is not Gemma 3's tokenizer model (SHA-256 %x, want %s)", ErrTokenizerModel, path, sum, gemma3ModelHash)
	}
	urlSum := sha256.Sum256([]byte(gemma3ModelURL))
	dir := filepath.Join(os.TempDir(), "vertexai_tokenizer_model")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tokenizer cache: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, hex.EncodeToString(urlSum[:])), data, 0o600); err != nil {
		return nil, fmt.Errorf("tokenizer cache: %w", err)
	}
	tok, err := tokenizer.NewLocalTokenizer(tokenizerModel)
	if err != nil {
		return nil, fmt.Errorf("genai local tokenizer: %w", err)
	}
	return &LocalTokenizer{tok: tok}, nil
}

// EstimateKind returns the request's kind of content (as EstimateKind, prefixed "tok" so that corrections
// learned for this estimator are kept apart from the characters/4 estimator's) and its estimate: the
// tokenizer's count of the text, plus each media part at Gemini's documented rate.
func (t *LocalTokenizer) EstimateKind(r *Request) (string, int64, error) {
	kind, _ := EstimateKind(r)
	if r == nil {
		return "tok" + kind, 0, nil
	}
	contents := r.Contents
	if r.SystemInstruction != nil {
		contents = append([]*genai.Content{r.SystemInstruction}, contents...)
	}
	var media int64
	for _, c := range contents {
		if c == nil {
			continue
		}
		for _, p := range c.Parts {
			if p != nil && p.InlineData != nil {
				media += inlineTokens(p.InlineData)
			}
			if p != nil && p.FileData != nil {
				media += MediaPartTokens
			}
		}
	}
	res, err := t.tok.CountTokens(contents, nil)
	if err != nil {
		return "", 0, fmt.Errorf("genai local tokenizer: %w", err)
	}
	return "tok" + kind, int64(res.TotalTokens) + media, nil
}
