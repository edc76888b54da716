package gemini

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/internal/jsonstrict"
)

// Request is one Gemini REST GenerateContentRequest without its model: the "request" object of a line of a
// Gemini Batch API input file. JSON field names are the REST (lowerCamel) ones.
type Request struct {
	Contents          []*genai.Content       `json:"contents,omitempty"`
	SystemInstruction *genai.Content         `json:"systemInstruction,omitempty"`
	GenerationConfig  *GenerationConfig      `json:"generationConfig,omitempty"`
	SafetySettings    []*genai.SafetySetting `json:"safetySettings,omitempty"`
	Tools             []*genai.Tool          `json:"tools,omitempty"`
	ToolConfig        *genai.ToolConfig      `json:"toolConfig,omitempty"`
	CachedContent     string                 `json:"cachedContent,omitempty"`
	// ServiceTier is the tier to call at ("standard", "flex", "priority";
	// "" for the default). It is set by the caller from the task's
	// service_tier, never parsed from the request's JSON (gemq's requests
	// name their tier at the job or envelope level).
	ServiceTier string `json:"-"`
}

// GenerationConfig is the REST generationConfig object of the Gemini API (v1beta).
type GenerationConfig struct {
	StopSequences              []string              `json:"stopSequences,omitempty"`
	ResponseMIMEType           string                `json:"responseMimeType,omitempty"`
	ResponseSchema             *genai.Schema         `json:"responseSchema,omitempty"`
	ResponseJSONSchema         any                   `json:"responseJsonSchema,omitempty"`
	ResponseModalities         []string              `json:"responseModalities,omitempty"`
	CandidateCount             *int32                `json:"candidateCount,omitempty"`
	MaxOutputTokens            *int32                `json:"maxOutputTokens,omitempty"`
	Temperature                *float32              `json:"temperature,omitempty"`
	TopP                       *float32              `json:"topP,omitempty"`
	TopK                       *float32              `json:"topK,omitempty"`
	Seed                       *int32                `json:"seed,omitempty"`
	PresencePenalty            *float32              `json:"presencePenalty,omitempty"`
	FrequencyPenalty           *float32              `json:"frequencyPenalty,omitempty"`
	ResponseLogprobs           bool                  `json:"responseLogprobs,omitempty"`
	Logprobs                   *int32                `json:"logprobs,omitempty"`
	EnableEnhancedCivicAnswers *bool                 `json:"enableEnhancedCivicAnswers,omitempty"`
	SpeechConfig               *genai.SpeechConfig   `json:"speechConfig,omitempty"`
	ThinkingConfig             *genai.ThinkingConfig `json:"thinkingConfig,omitempty"`
	ImageConfig                *genai.ImageConfig    `json:"imageConfig,omitempty"`
	MediaResolution            genai.MediaResolution `json:"mediaResolution,omitempty"`
}

// FieldError is a request error that names the offending field by its JSON path, e.g.
// "request.generationConfig.temperature" or "request.contents[0].parts[1].textt".
type FieldError struct {
	Field   string // JSON path, rooted at "request"
	Message string // what is wrong, without the path
}

// Error returns "<field>: <message>".
func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Field: path, Message: fmt.Sprintf(format, args...)}
}

// requestDecoder is the one strict decoder of GenerateContentRequests, for
// ingest and the worker alike: the rules of internal/jsonstrict, with the
// spellings the REST API accepts beside the canonical ones (ProtoJSON).
var requestDecoder = jsonstrict.Decoder{ProtoJSON: true}

// ParseRequest decodes one GenerateContentRequest strictly, with
// jsonstrict's rules: exactly one JSON object, no trailing data, valid UTF-8
// without lone surrogate escapes, nesting at most jsonstrict.DefaultMaxDepth,
// no unknown fields (field names are compared exactly: "Contents" is unknown,
// not contents; proto-style snake_case spellings such as "max_output_tokens"
// are accepted as the REST API accepts them), no duplicate fields (a
// snake_case spelling and its lowerCamel name are the same field), no
// duplicate keys anywhere (keys inside free-form values such as a JSON
// schema's properties or function arguments are data, compared exactly), and
// JSON types matching the fields (a whole number such as 1.0 fits an integer
// field; bytes are base64, standard or URL-safe, padded or not). Errors are
// *FieldError naming the field path as written, rooted at "request". It does
// not check values: see Validate.
func ParseRequest(raw []byte) (*Request, error) {
	const root = "request"
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) > 0 && t[0] != '{' {
		return nil, fieldErr(root, "must be a JSON object")
	}
	var r Request
	if err := requestDecoder.Decode(raw, &r); err != nil {
		var je *jsonstrict.Error
		if !errors.As(err, &je) {
			return nil, fmt.Errorf("gemini: parse request: %w", err)
		}
		field := root
		switch {
		case je.Path == "":
		case strings.HasPrefix(je.Path, "["):
			field += je.Path
		default:
			field += "." + je.Path
		}
		return nil, &FieldError{Field: field, Message: je.Msg}
	}
	return &r, nil
}
