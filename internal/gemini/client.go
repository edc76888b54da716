// Package gemini is gemq's one door to Gemini: it builds the google.golang.org/genai client (Gemini API key
// or Vertex AI, base URL override, SDK retries off), parses and validates Batch-API style
// GenerateContentRequests strictly, estimates input tokens locally, makes the call with gemq's task id
// header and a per-call timeout, and classifies failures into what the worker must do next.
package gemini

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"google.golang.org/genai"
)

// TaskIDHeader is the request header that carries the gemq task id of a Gemini call. Gemini ignores it; the
// Gemini stand-in records it to find duplicate calls.
const TaskIDHeader = "X-Gemq-Task-Id"

// ServiceTierHeader is the response header naming the tier that served a call
// (https://ai.google.dev/gemini-api/docs/priority-inference, read 2026-12-02).
const ServiceTierHeader = "X-Gemini-Service-Tier"

// DefaultTimeout is the per-call timeout when Config.Timeout is zero (GEMQ_GEMINI_TIMEOUT's default).
const DefaultTimeout = 120 * time.Second

// Config says how to reach Gemini.
type Config struct {
	// APIKey is the Gemini API key (GEMINI_API_KEY); required unless Vertex.
	APIKey string
	// BaseURL overrides the endpoint, e.g. the Gemini stand-in's URL. Empty: GOOGLE_GEMINI_BASE_URL from the
	// environment (Gemini API only), else the real service.
	BaseURL string
	// Vertex selects Vertex AI (GOOGLE_GENAI_USE_VERTEXAI) with Project and Location and Application Default
	// Credentials instead of an API key.
	Vertex bool
	// Project is the Vertex AI project (GOOGLE_CLOUD_PROJECT); required with Vertex.
	Project string
	// Location is the Vertex AI location (GOOGLE_CLOUD_LOCATION); default "us-central1".
	Location string
	// Timeout bounds each call (GEMQ_GEMINI_TIMEOUT); default DefaultTimeout.
	Timeout time.Duration
	// FlexTimeout bounds each call at the flex tier (GEMQ_FLEX_TIMEOUT); default (and at least) Timeout.
	FlexTimeout time.Duration
	// HTTPClient, optional, replaces the HTTP client; with Vertex it must add credentials itself (no ADC
	// lookup is made then).
	HTTPClient *http.Client
}

// Client calls Gemini. It is safe for concurrent use. It never retries: every Gemini request must hold a
// quota permit, so retries go through the pipeline.
type Client struct {
	gc          *genai.Client
	timeout     time.Duration
	flexTimeout time.Duration
	vertex      bool
}

// NewClient builds the genai client from cfg. The genai SDK only retries when HTTPOptions.RetryOptions is
// set; NewClient leaves it nil at client level and every call passes none, so each call is exactly one
// HTTP request. Errors name the missing setting.
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	cc := &genai.ClientConfig{HTTPClient: cfg.HTTPClient}
	cc.HTTPOptions.BaseURL = cfg.BaseURL
	if cfg.Vertex {
		if cfg.Project == "" {
			return nil, errors.New("gemini: Vertex AI needs Project (GOOGLE_CLOUD_PROJECT)")
		}
		if cfg.Location == "" {
			cfg.Location = "us-central1"
		}
		cc.Backend = genai.BackendVertexAI
		cc.Project, cc.Location = cfg.Project, cfg.Location
	} else {
		if cfg.APIKey == "" {
			return nil, errors.New("gemini: APIKey (GEMINI_API_KEY) is required unless Vertex AI is used")
		}
		cc.Backend = genai.BackendGeminiAPI
		cc.APIKey = cfg.APIKey
		if cc.HTTPOptions.BaseURL == "" {
			cc.HTTPOptions.BaseURL = os.Getenv("GOOGLE_GEMINI_BASE_URL")
		}
	}
	if cc.HTTPClient == nil && (!cfg.Vertex) {
		// The default transport keeps only 2 idle connections per host; a worker instance runs many calls
		// at once, so keep more to avoid reconnecting for every call.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		cc.HTTPClient = &http.Client{Transport: t}
	}
	cc.HTTPOptions.RetryOptions = nil
	gc, err := genai.NewClient(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("genai.NewClient: %w", err)
	}
	return &Client{gc: gc, timeout: cfg.Timeout, flexTimeout: max(cfg.FlexTimeout, cfg.Timeout), vertex: cfg.Vertex}, nil
}

// Response is a successful GenerateContent answer.
type Response struct {
	// JSON is the GenerateContentResponse as REST JSON (candidates, usageMetadata, modelVersion,
	// responseId, ...): the "response" object of a Batch API output line.
	JSON json.RawMessage
	// PromptTokens is usageMetadata.promptTokenCount: the input tokens Gemini charged.
	PromptTokens int64
	// CandidatesTokens, ThoughtsTokens and TotalTokens are the other usageMetadata counts.
	CandidatesTokens, ThoughtsTokens, TotalTokens int64
	// CachedTokens is usageMetadata.cachedContentTokenCount: the part of PromptTokens served from a
	// context cache (billed at the cached rate).
	CachedTokens int64
	// ServiceTier is the tier that served the call, from the x-gemini-service-tier response header
	// (ServiceTierHeader); "" when absent (Vertex AI). genai v1.77.0, the newest on the module proxy on
	// 2026-12-02, decodes usageMetadata into GenerateContentResponseUsageMetadata, which has no
	// serviceTier field (only the Live API's UsageMetadata has one), so the header is the one source
	// the SDK keeps.
	ServiceTier string
	// FinishReason is the first candidate's finishReason ("STOP", "MAX_TOKENS", ...), empty if none.
	FinishReason string
}

// Generate makes one generateContent call for model ("gemini-2.5-flash" or "models/gemini-2.5-flash") at
// r.ServiceTier, with header X-Gemq-Task-Id: taskID and the client's per-call timeout (FlexTimeout at flex). The SDK's automatic continuation is off,
// so it is exactly one request. Errors wrap genai's (a genai.APIError for HTTP errors); pass them to
// Classify.
func (c *Client) Generate(ctx context.Context, taskID, model string, r *Request) (*Response, error) {
	id, err := ModelID(model)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, errors.New("gemini: Generate: nil request")
	}
	cfg := r.genaiConfig()
	timeout := c.timeout
	if r.ServiceTier == string(genai.ServiceTierFlex) {
		timeout = c.flexTimeout
	}
	cfg.HTTPOptions = &genai.HTTPOptions{Headers: http.Header{TaskIDHeader: {taskID}}, Timeout: &timeout}
	cfg.AutomaticContinuation = genai.Ptr(false)
	resp, err := c.gc.Models.GenerateContent(ctx, id, r.Contents, cfg)
	if err != nil {
		return nil, fmt.Errorf("genai generateContent: %w", err)
	}
	return newResponse(resp)
}

// newResponse is a Response from genai's: its REST JSON (without the SDK's
// HTTP details), its usage, the tier that served it (header), its first
// finish reason.
func newResponse(resp *genai.GenerateContentResponse) (*Response, error) {
	var servedHeader string
	if h := resp.SDKHTTPResponse; h != nil {
		servedHeader = http.Header(h.Headers).Get(ServiceTierHeader)
	}
	resp.SDKHTTPResponse = nil
	b, err := json.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("gemini: encode response: %w", err)
	}
	out := &Response{JSON: b}
	if u := resp.UsageMetadata; u != nil {
		out.PromptTokens = int64(u.PromptTokenCount)
		out.CandidatesTokens = int64(u.CandidatesTokenCount)
		out.ThoughtsTokens = int64(u.ThoughtsTokenCount)
		out.TotalTokens = int64(u.TotalTokenCount)
		out.CachedTokens = int64(u.CachedContentTokenCount)
	}
	out.ServiceTier = servedHeader
	if len(resp.Candidates) > 0 && resp.Candidates[0] != nil {
		out.FinishReason = string(resp.Candidates[0].FinishReason)
	}
	return out, nil
}

// CountTokens asks Gemini's countTokens for the request's input tokens (system instruction and contents).
// With the Gemini API, whose countTokens takes contents only, the system instruction is counted as one more
// leading content; with Vertex AI it is passed as such, with the tools.
func (c *Client) CountTokens(ctx context.Context, model string, r *Request) (int64, error) {
	id, err := ModelID(model)
	if err != nil {
		return 0, err
	}
	if r == nil {
		return 0, errors.New("gemini: CountTokens: nil request")
	}
	timeout := c.timeout
	cfg := &genai.CountTokensConfig{HTTPOptions: &genai.HTTPOptions{Timeout: &timeout}}
	contents := r.Contents
	if si := r.SystemInstruction; si != nil {
		if c.vertex {
			cfg.SystemInstruction = si
			cfg.Tools = r.Tools
		} else {
			contents = append([]*genai.Content{{Role: genai.RoleUser, Parts: si.Parts}}, r.Contents...)
		}
	}
	resp, err := c.gc.Models.CountTokens(ctx, id, contents, cfg)
	if err != nil {
		return 0, fmt.Errorf("genai countTokens: %w", err)
	}
	return int64(resp.TotalTokens), nil
}

// genaiConfig maps the REST request's non-content fields onto genai's GenerateContentConfig. The system
// instruction is copied because genai sets its role in place.
func (r *Request) genaiConfig() *genai.GenerateContentConfig {
	cfg := &genai.GenerateContentConfig{
		SafetySettings: r.SafetySettings,
		Tools:          r.Tools,
		ToolConfig:     r.ToolConfig,
		CachedContent:  r.CachedContent,
		ServiceTier:    genai.ServiceTier(r.ServiceTier),
	}
	if si := r.SystemInstruction; si != nil {
		cp := *si
		cfg.SystemInstruction = &cp
	}
	if g := r.GenerationConfig; g != nil {
		cfg.StopSequences = g.StopSequences
		cfg.ResponseMIMEType = g.ResponseMIMEType
		cfg.ResponseSchema = g.ResponseSchema
		cfg.ResponseJsonSchema = g.ResponseJSONSchema
		cfg.ResponseModalities = g.ResponseModalities
		if g.CandidateCount != nil {
			cfg.CandidateCount = *g.CandidateCount
		}
		if g.MaxOutputTokens != nil {
			cfg.MaxOutputTokens = *g.MaxOutputTokens
		}
		cfg.Temperature = g.Temperature
		cfg.TopP = g.TopP
		cfg.TopK = g.TopK
		cfg.Seed = g.Seed
		cfg.PresencePenalty = g.PresencePenalty
		cfg.FrequencyPenalty = g.FrequencyPenalty
		cfg.ResponseLogprobs = g.ResponseLogprobs
		cfg.Logprobs = g.Logprobs
		cfg.EnableEnhancedCivicAnswers = g.EnableEnhancedCivicAnswers
		cfg.SpeechConfig = g.SpeechConfig
		cfg.ThinkingConfig = g.ThinkingConfig
		cfg.ImageConfig = g.ImageConfig
		cfg.MediaResolution = g.MediaResolution
	}
	return cfg
}
