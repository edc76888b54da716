package gemini

import (
	"bytes"
	"encoding/json"
	"image"
	_ "image/gif" // image.DecodeConfig of inline images
	_ "image/jpeg"
	_ "image/png"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genai"
)

// MediaPartTokens is what one inlineData or fileData part (an image, audio, a PDF...) counts as, whatever
// its size. 258 is what the Gemini API charges for one image of up to 384×384 pixels.
const MediaPartTokens = 258

// TextTokens counts the tokens of a text with gemq's deterministic rule: every four ASCII characters make a
// token (rounded up) and every non-ASCII character is a token of its own. It approximates Gemini's
// tokenizer (about four characters per token for English, about one per CJK character) and is exactly the
// rule the Gemini stand-in (infra/geminisim) charges, so estimates and "truth" can be compared.
func TextTokens(s string) int64 {
	var ascii, other int64
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			ascii++
			i++
			continue
		}
		_, n := utf8.DecodeRuneInString(s[i:])
		other++
		i += n
	}
	return (ascii+3)/4 + other
}

// PartTokens counts one part: text (thoughts included) by TextTokens; an inline image by its size at
// Gemini's documented rate, other inlineData and fileData as MediaPartTokens; a functionCall or functionResponse as the text of its name plus its JSON arguments or
// response; executableCode and codeExecutionResult as their text. A nil part counts 0.
func PartTokens(p *genai.Part) int64 {
	if p == nil {
		return 0
	}
	n := TextTokens(p.Text)
	if p.InlineData != nil {
		n += inlineTokens(p.InlineData)
	}
	if p.FileData != nil {
		n += MediaPartTokens
	}
	if fc := p.FunctionCall; fc != nil {
		n += TextTokens(fc.Name) + jsonTokens(fc.Args)
	}
	if fr := p.FunctionResponse; fr != nil {
		n += TextTokens(fr.Name) + jsonTokens(fr.Response)
	}
	if ec := p.ExecutableCode; ec != nil {
		n += TextTokens(ec.Code)
	}
	if cr := p.CodeExecutionResult; cr != nil {
		n += TextTokens(cr.Output)
	}
	return n
}

// inlineTokens counts an inline part: an image whose size can be read at Gemini's documented rate (258
// tokens up to 384×384 pixels, else 258 per 768×768 tile, https://ai.google.dev/gemini-api/docs/tokens),
// anything else as MediaPartTokens.
func inlineTokens(b *genai.Blob) int64 {
	if !strings.HasPrefix(b.MIMEType, "image/") {
		return MediaPartTokens
	}
	c, _, err := image.DecodeConfig(bytes.NewReader(b.Data))
	if err != nil || (c.Width <= 384 && c.Height <= 384) {
		return MediaPartTokens
	}
	tiles := func(px int) int64 { return int64(px+767) / 768 }
	return MediaPartTokens * tiles(c.Width) * tiles(c.Height)
}

func jsonTokens(v map[string]any) int64 {
	if len(v) == 0 {
		return 0
	}
	b, err := json.Marshal(v) // map keys are sorted, so the count is deterministic
	if err != nil {
		return 0
	}
	return TextTokens(string(b))
}

// ContentsTokens counts the input tokens of a prompt: every part of the system instruction and of every
// content, with no per-message overhead (so a system instruction folded into the contents counts the
// same). Tools, tool config and cached content are not counted.
func ContentsTokens(system *genai.Content, contents []*genai.Content) int64 {
	var n int64
	if system != nil {
		for _, p := range system.Parts {
			n += PartTokens(p)
		}
	}
	for _, c := range contents {
		if c == nil {
			continue
		}
		for _, p := range c.Parts {
			n += PartTokens(p)
		}
	}
	return n
}

// EstimateInputTokens is the cheap local estimate of a request's input tokens (ContentsTokens of its
// system instruction and contents). It is exact against the Gemini stand-in when the stand-in's skew is
// off, and an approximation against the real API. A nil request counts 0.
func EstimateInputTokens(r *Request) int64 {
	if r == nil {
		return 0
	}
	return ContentsTokens(r.SystemInstruction, r.Contents)
}

// Kinds of content EstimateKind tells apart: the estimate's error against Gemini's tokenizer differs by kind
// (characters/4 is close for prose, low for digits and punctuation-dense code or JSON), so a learner keeps one
// correction per kind.
const (
	KindProse  = "prose"
	KindDigits = "digits"
	KindCode   = "code"
	KindCJK    = "cjk"
	KindMedia  = "media"
)

// EstimateKind returns the request's dominant kind of content and its local estimate (EstimateInputTokens):
// media when any part carries inline or file data; else, over the text of every part, cjk when CJK
// characters are over 30% of the non-space characters, digits when digits are over 30%, code when other
// punctuation and symbols are over 15%, prose otherwise. A nil request is ("prose", 0).
func EstimateKind(r *Request) (string, int64) {
	if r == nil {
		return KindProse, 0
	}
	var total, digits, punct, cjk int
	media := false
	scan := func(s string) {
		for _, c := range s {
			switch {
			case unicode.IsSpace(c):
				continue
			case unicode.IsDigit(c):
				digits++
			case unicode.Is(unicode.Han, c) || unicode.Is(unicode.Hiragana, c) || unicode.Is(unicode.Katakana, c) || unicode.Is(unicode.Hangul, c):
				cjk++
			case unicode.IsPunct(c) || unicode.IsSymbol(c):
				punct++
			}
			total++
		}
	}
	contents := r.Contents
	if r.SystemInstruction != nil {
		contents = append([]*genai.Content{r.SystemInstruction}, contents...)
	}
	for _, c := range contents {
		if c == nil {
			continue
		}
		for _, p := range c.Parts {
			if p == nil {
				continue
			}
			media = media || p.InlineData != nil || p.FileData != nil
			scan(p.Text)
			if fc := p.FunctionCall; fc != nil {
				b, _ := json.Marshal(fc.Args)
				scan(string(b))
			}
			if fr := p.FunctionResponse; fr != nil {
				b, _ := json.Marshal(fr.Response)
				scan(string(b))
			}
		}
	}
	n := EstimateInputTokens(r)
	switch {
	case media:
		return KindMedia, n
	case total == 0:
		return KindProse, n
	case cjk*10 > total*3:
		return KindCJK, n
	case digits*10 > total*3:
		return KindDigits, n
	case punct*100 > total*15:
		return KindCode, n
	}
	return KindProse, n
}
