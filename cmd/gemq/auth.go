package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/idtoken"
	"google.golang.org/api/impersonate"
	"google.golang.org/api/option"
)

// The ways gemq gets a Google ID token for a deployed ingest URL, first match wins:
//
//	GEMQ_ID_TOKEN                      a token, used as is until it expires (about an hour)
//	GEMQ_ID_TOKEN_COMMAND              a command printing one, run again before each token expires,
//	                                   e.g. "gcloud auth print-identity-token --project=P" (user credentials)
//	GEMQ_IMPERSONATE_SERVICE_ACCOUNT   an invoker service account impersonated with Application Default
//	                                   Credentials (user credentials from `gcloud auth application-default
//	                                   login` need roles/iam.serviceAccountTokenCreator on it)
//	Application Default Credentials    a service-account key (GOOGLE_APPLICATION_CREDENTIALS), the attached
//	                                   service account on Google Cloud, or workload identity federation
//	                                   (an external_account file that impersonates a service account)
const (
	envIDToken        = "GEMQ_ID_TOKEN"
	envIDTokenCommand = "GEMQ_ID_TOKEN_COMMAND"
	envImpersonate    = "GEMQ_IMPERSONATE_SERVICE_ACCOUNT"
)

// refreshMargin is how long before its expiry a token is replaced: a request
// must not leave with a token that expires on the way.
const refreshMargin = 5 * time.Minute

// authDeps are what idTokenSource reaches outside the process; tests replace them.
type authDeps struct {
	now  func() time.Time
	opts []option.ClientOption // passed to idtoken and impersonate
}

func (d authDeps) clock() func() time.Time {
	if d.now != nil {
		return d.now
	}
	return time.Now
}

// idTokenSource returns a source of ID tokens for audience that renews each
// token refreshMargin before it expires, so a long `--wait` keeps working. Its
// errors are *exitError (exitAuth) saying what to set instead.
func idTokenSource(ctx context.Context, audience string, getenv func(string) string, deps authDeps) (oauth2.TokenSource, error) {
	now := deps.clock()
	switch {
	case getenv(envIDToken) != "":
		return &staticSource{tok: getenv(envIDToken), now: now}, nil
	case getenv(envIDTokenCommand) != "":
		return newRefreshing(&commandSource{command: getenv(envIDTokenCommand), now: now}, now), nil
	case getenv(envImpersonate) != "":
		src, err := impersonate.IDTokenSource(ctx, impersonate.IDTokenConfig{
			Audience:        audience,
			TargetPrincipal: getenv(envImpersonate),
			IncludeEmail:    true,
		}, deps.opts...)
		if err != nil {
			return nil, &exitError{code: exitAuth, msg: fmt.Sprintf(
				"cannot impersonate %s for an ID token: %v\n"+
					"  The base credentials are Application Default Credentials (gcloud auth application-default login);\n"+
					"  they need roles/iam.serviceAccountTokenCreator on that service account.", getenv(envImpersonate), err)}
		}
		return newRefreshing(src, now), nil
	}
	src, err := idtoken.NewTokenSource(ctx, audience, deps.opts...)
	if err != nil {
		hint := "  Use a service account (GOOGLE_APPLICATION_CREDENTIALS=key.json, workload identity, or run on Google Cloud),\n" +
			"  impersonate an invoker: export " + envImpersonate + "=INVOKER@PROJECT.iam.gserviceaccount.com,\n" +
			"  or let gcloud print tokens: export " + envIDTokenCommand + "='gcloud auth print-identity-token --project=PROJECT'\n" +
			"  (" + envIDToken + " takes one token, which expires after about an hour)."
		if strings.Contains(err.Error(), `"authorized_user"`) {
			hint = "  Application Default Credentials are user credentials, which cannot mint ID tokens for a URL.\n" + hint
		}
		return nil, &exitError{code: exitAuth, msg: fmt.Sprintf(
			"cannot get a Google ID token for %s from Application Default Credentials: %v\n%s", audience, err, hint)}
	}
	return newRefreshing(src, now), nil
}

// refreshing caches a token and asks src for a new one once the cached one is
// within refreshMargin of its expiry (a token without an expiry is kept).
type refreshing struct {
	mu  sync.Mutex
	src oauth2.TokenSource
	now func() time.Time
	tok *oauth2.Token
}

func newRefreshing(src oauth2.TokenSource, now func() time.Time) *refreshing {
	return &refreshing{src: src, now: now}
}

// Token returns the cached token, or a new one when it is about to expire.
func (r *refreshing) Token() (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tok != nil && (r.tok.Expiry.IsZero() || r.now().Add(refreshMargin).Before(r.tok.Expiry)) {
		return r.tok, nil
	}
	tok, err := r.src.Token()
	if err != nil {
		return nil, fmt.Errorf("refresh ID token: %w", err)
	}
	if exp, ok := jwtExpiry(tok.AccessToken); ok && (tok.Expiry.IsZero() || exp.Before(tok.Expiry)) {
		tok.Expiry = exp // the token's own claim wins over a source's guess
	}
	r.tok = tok
	return tok, nil
}

// staticSource serves GEMQ_ID_TOKEN and fails clearly once the token's exp
// claim has passed, rather than letting ingest answer 401.
type staticSource struct {
	tok string
	now func() time.Time
}

func (s *staticSource) Token() (*oauth2.Token, error) {
	t := &oauth2.Token{AccessToken: s.tok}
	if exp, ok := jwtExpiry(s.tok); ok {
		t.Expiry = exp
		if !s.now().Before(exp) {
			return nil, fmt.Errorf("%s expired at %s (ID tokens last about an hour): set %s instead, e.g. 'gcloud auth print-identity-token --project=PROJECT', so gemq fetches new ones, or %s",
				envIDToken, exp.UTC().Format(time.RFC3339), envIDTokenCommand, envImpersonate)
		}
	}
	return t, nil
}

// commandSource runs a shell command that prints an ID token on stdout.
type commandSource struct {
	command string
	now     func() time.Time
}

// commandTimeout bounds one run of GEMQ_ID_TOKEN_COMMAND.
const commandTimeout = time.Minute

func (c *commandSource) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", c.command)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &stdout, &stderr, nil
	cmd.Env = os.Environ()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %q: %v: %s", envIDTokenCommand, c.command, err, strings.TrimSpace(stderr.String()))
	}
	tok := strings.TrimSpace(stdout.String())
	if tok == "" || strings.ContainsAny(tok, " \n\t") {
		return nil, fmt.Errorf("%s %q printed no single token", envIDTokenCommand, c.command)
	}
	t := &oauth2.Token{AccessToken: tok}
	if exp, ok := jwtExpiry(tok); ok {
		t.Expiry = exp
	} else {
		// An opaque token: run the command again in a while rather than never.
		t.Expiry = c.now().Add(2 * refreshMargin)
	}
	return t, nil
}

// jwtExpiry reads the exp claim of a JWT without verifying it: the server
// verifies; the client only needs to know when to ask for a new one.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == "" {
		return time.Time{}, false
	}
	sec, err := claims.Exp.Int64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}
