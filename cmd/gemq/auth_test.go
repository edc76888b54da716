package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/option"
)

// fakeClock is a controllable clock shared by a token source and the server
// that checks the tokens' expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// unsignedJWT is a token with the claims given (the client never verifies).
func unsignedJWT(claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + ".c2ln"
}

// expiringSource mints ID tokens that expire an hour after they are minted,
// by the clock, as Google's do.
type expiringSource struct {
	clock  *fakeClock
	mu     sync.Mutex
	minted int
}

func (s *expiringSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.minted++
	exp := s.clock.now().Add(time.Hour)
	return &oauth2.Token{AccessToken: unsignedJWT(map[string]any{"n": s.minted, "exp": exp.Unix()}), Expiry: exp}, nil
}

// ingestRejectingExpired answers GET /v1/jobs/{id} like ingest behind Cloud
// Run's IAM check: 401 for a missing or expired ID token.
func ingestRejectingExpired(t *testing.T, clock *fakeClock) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		exp, valid := jwtExpiry(tok)
		if !ok || !valid || !clock.now().Before(exp) {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, "The access token could not be verified")
			return
		}
		fmt.Fprint(w, `{"job_id":"j","state":"running","counts":{"total":10,"succeeded":3}}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func clientWith(t *testing.T, rawURL string, src oauth2.TokenSource) *client {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return &client{base: u, http: &http.Client{Transport: &tokenTransport{base: http.DefaultTransport, src: src}}}
}

// TestTokensRefreshDuringLongWait polls a job for three simulated hours, as
// `gemq submit --wait` does, with tokens that expire after one.
func TestTokensRefreshDuringLongWait(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	srv := ingestRejectingExpired(t, clock)
	src := &expiringSource{clock: clock}
	c := clientWith(t, srv.URL, newRefreshing(src, clock.now))
	for i := range 13 { // every 15 minutes for 3 hours
		if _, err := c.status(context.Background(), "j"); err != nil {
			t.Fatalf("poll %d at %s: %v", i, clock.now().Format(time.Kitchen), err)
		}
		clock.advance(15 * time.Minute)
	}
	// A token is replaced refreshMargin before its hour is up: 4 tokens cover 3 h.
	if src.minted < 4 || src.minted > 5 {
		t.Errorf("minted %d tokens over 3 h of polling, want 4-5 (one reused per ~55 min)", src.minted)
	}

	t.Run("without refreshing the server's check bites", func(t *testing.T) {
		c := clientWith(t, srv.URL, oauth2.StaticTokenSource(mustToken(t, src)))
		clock.advance(61 * time.Minute)
		_, err := c.status(context.Background(), "j")
		var ae *apiError
		if !errors.As(err, &ae) || ae.HTTPStatus != http.StatusUnauthorized || ae.exitCode() != exitAuth {
			t.Fatalf("an expired token got %v, want 401", err)
		}
	})
}

func mustToken(t *testing.T, src oauth2.TokenSource) *oauth2.Token {
	t.Helper()
	tok, err := src.Token()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestStaticTokenExpiresWithAClearError(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	tok := unsignedJWT(map[string]any{"exp": clock.now().Add(time.Hour).Unix()})
	env := map[string]string{envIDToken: tok}
	src, err := idTokenSource(context.Background(), "https://ingest.example.com", func(k string) string { return env[k] }, authDeps{now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	c := clientWith(t, ingestRejectingExpired(t, clock).URL, src)
	if _, err := c.status(context.Background(), "j"); err != nil {
		t.Fatalf("fresh GEMQ_ID_TOKEN: %v", err)
	}
	clock.advance(time.Hour)
	_, err = c.status(context.Background(), "j")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitAuth || !strings.Contains(ee.msg, "GEMQ_ID_TOKEN expired at 2026-12-02T10:00:00Z") || !strings.Contains(ee.msg, envIDTokenCommand) {
		t.Fatalf("expired GEMQ_ID_TOKEN: %v, want exit %d naming the expiry and %s", err, exitAuth, envIDTokenCommand)
	}
}

// TestTokenCommandRunsAgainBeforeExpiry runs a real shell command, as it would
// run `gcloud auth print-identity-token`, and replaces what it prints.
func TestTokenCommandRunsAgainBeforeExpiry(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)}
	file := filepath.Join(t.TempDir(), "token")
	write := func(n int) string {
		tok := unsignedJWT(map[string]any{"n": n, "exp": clock.now().Add(time.Hour).Unix()})
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	first := write(1)
	env := map[string]string{envIDTokenCommand: "cat " + file}
	src, err := idTokenSource(context.Background(), "https://ingest.example.com", func(k string) string { return env[k] }, authDeps{now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustToken(t, src).AccessToken; got != first {
		t.Fatalf("first token %q, want the command's output %q", got, first)
	}
	clock.advance(50 * time.Minute)
	second := write(2)
	if got := mustToken(t, src).AccessToken; got != first {
		t.Fatalf("at 50 min the token was replaced (%q) though it had 10 min left", got)
	}
	clock.advance(6 * time.Minute) // 4 min left: within refreshMargin
	if got := mustToken(t, src).AccessToken; got != second {
		t.Fatalf("at 56 min got %q, want the command run again (%q)", got, second)
	}

	env[envIDTokenCommand] = "echo 'ERROR: (gcloud.auth.print-identity-token) not logged in' >&2; exit 1"
	src, err = idTokenSource(context.Background(), "https://ingest.example.com", func(k string) string { return env[k] }, authDeps{now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(); err == nil || !strings.Contains(err.Error(), "not logged in") || !strings.Contains(err.Error(), envIDTokenCommand) {
		t.Fatalf("failing command: %v, want its stderr and the variable's name", err)
	}
}

// TestServiceAccountKey mints ID tokens from a service-account key file
// through the real idtoken library; the key's token_uri points at a local
// OAuth 2.0 token endpoint that verifies the signed assertion as Google's does.
func TestServiceAccountKey(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	const audience = "https://gemq-ingest-123.us-central1.run.app"
	var assertions int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
			http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
			return
		}
		claims, err := verifyRS256(r.Form.Get("assertion"), &key.PublicKey)
		if err != nil || claims["target_audience"] != audience || claims["iss"] != "invoker@p.iam.gserviceaccount.com" {
			http.Error(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`, http.StatusBadRequest)
			return
		}
		assertions++
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"id_token": unsignedJWT(map[string]any{"aud": audience, "exp": time.Now().Add(time.Hour).Unix()})})
	}))
	defer srv.Close()
	der := x509.MarshalPKCS1PrivateKey(key)
	keyFile := filepath.Join(t.TempDir(), "key.json")
	data, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "p", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})),
		"client_email": "invoker@p.iam.gserviceaccount.com", "client_id": "1", "token_uri": srv.URL + "/token",
	})
	if err := os.WriteFile(keyFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
	src, err := idTokenSource(context.Background(), audience, func(string) string { return "" }, authDeps{})
	if err != nil {
		t.Fatal(err)
	}
	tok := mustToken(t, src)
	if exp, ok := jwtExpiry(tok.AccessToken); !ok || assertions != 1 || time.Until(exp) < 50*time.Minute {
		t.Fatalf("token %q (exp %v) after %d assertions, want the endpoint's ID token", tok.AccessToken, exp, assertions)
	}
}

func verifyRS256(jwt string, pub *rsa.PublicKey) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return nil, err
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	return claims, json.Unmarshal(payload, &claims)
}

// fakeIAMCredentials answers generateIdToken like iamcredentials.googleapis.com:
// 401 without a bearer token, 403 for an account the caller may not
// impersonate, else an ID token for the requested audience.
type fakeIAMCredentials struct {
	allowed string // the one service account the base credentials may impersonate
	mu      sync.Mutex
	calls   []string // "EMAIL audience includeEmail"
}

func (f *fakeIAMCredentials) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer base-access-token" {
		http.Error(w, `{"error":{"code":401,"status":"UNAUTHENTICATED"}}`, http.StatusUnauthorized)
		return
	}
	email, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/-/serviceAccounts/")
	email, ok2 := strings.CutSuffix(email, ":generateIdToken")
	var body struct {
		Audience     string `json:"audience"`
		IncludeEmail bool   `json:"includeEmail"`
	}
	if !ok || !ok2 || json.NewDecoder(r.Body).Decode(&body) != nil || body.Audience == "" {
		http.Error(w, `{"error":{"code":400,"status":"INVALID_ARGUMENT"}}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s %v", email, body.Audience, body.IncludeEmail))
	f.mu.Unlock()
	if email != f.allowed {
		http.Error(w, `{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getOpenIdToken' denied","status":"PERMISSION_DENIED"}}`, http.StatusForbidden)
		return
	}
	json.NewEncoder(w).Encode(map[string]string{"token": unsignedJWT(map[string]any{"aud": body.Audience, "email": email, "exp": time.Now().Add(time.Hour).Unix()})})
}

// toLocal sends every request to one local server, whatever its host, as the
// IAM Credentials API's fixed endpoint would be reached.
type toLocal struct{ base *url.URL }

func (l toLocal) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = l.base.Scheme, l.base.Host
	return http.DefaultTransport.RoundTrip(r)
}

func iamClientOption(t *testing.T, iam *fakeIAMCredentials) option.ClientOption {
	t.Helper()
	srv := httptest.NewServer(iam)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	// The base credentials' access token, as ADC (user or external account) would attach it.
	return option.WithHTTPClient(&http.Client{Transport: &oauth2.Transport{
		Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "base-access-token"}),
		Base:   toLocal{base: u},
	}})
}

// TestImpersonatedInvoker is the user-credentials path: ADC (here a fixed
// access token) impersonates an invoker service account through the real
// impersonate library.
func TestImpersonatedInvoker(t *testing.T) {
	const audience = "https://gemq-ingest-123.us-central1.run.app"
	iam := &fakeIAMCredentials{allowed: "invoker@p.iam.gserviceaccount.com"}
	opt := iamClientOption(t, iam)
	env := map[string]string{envImpersonate: "invoker@p.iam.gserviceaccount.com"}
	src, err := idTokenSource(context.Background(), audience, func(k string) string { return env[k] }, authDeps{opts: []option.ClientOption{opt}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := jwtExpiry(mustToken(t, src).AccessToken); !ok || len(iam.calls) != 1 || iam.calls[0] != "invoker@p.iam.gserviceaccount.com "+audience+" true" {
		t.Fatalf("IAM Credentials calls %q, want one generateIdToken for the invoker and the ingest URL", iam.calls)
	}

	env[envImpersonate] = "someone-else@p.iam.gserviceaccount.com"
	src, err = idTokenSource(context.Background(), audience, func(k string) string { return env[k] }, authDeps{opts: []option.ClientOption{opt}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(); err == nil || !strings.Contains(err.Error(), "PERMISSION_DENIED") {
		t.Fatalf("impersonating an account without the grant: %v, want PERMISSION_DENIED", err)
	}
}

// TestWorkloadIdentityFile is the external_account path (workload identity
// federation): the real idtoken library reads the configuration file and asks
// IAM Credentials for an ID token of the service account it impersonates. The
// security-token exchange itself is the library's and is not exercised here.
func TestWorkloadIdentityFile(t *testing.T) {
	const audience = "https://gemq-ingest-123.us-central1.run.app"
	iam := &fakeIAMCredentials{allowed: "ci-invoker@p.iam.gserviceaccount.com"}
	dir := t.TempDir()
	subject := filepath.Join(dir, "subject-token")
	os.WriteFile(subject, []byte("oidc-token-from-ci"), 0o600)
	cfg, _ := json.Marshal(map[string]any{
		"type":                              "external_account",
		"audience":                          "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/providers/gh",
		"subject_token_type":                "urn:ietf:params:oauth:token-type:jwt",
		"token_url":                         "https://sts.googleapis.com/v1/token",
		"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/ci-invoker@p.iam.gserviceaccount.com:generateAccessToken",
		"credential_source":                 map[string]any{"file": subject},
	})
	file := filepath.Join(dir, "wif.json")
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", file)
	src, err := idTokenSource(context.Background(), audience, func(string) string { return "" }, authDeps{opts: []option.ClientOption{iamClientOption(t, iam)}})
	if err != nil {
		t.Fatal(err)
	}
	tok := mustToken(t, src)
	if len(iam.calls) != 1 || iam.calls[0] != "ci-invoker@p.iam.gserviceaccount.com "+audience+" true" || tok.AccessToken == "" {
		t.Fatalf("IAM Credentials calls %q, want one generateIdToken for the federated service account", iam.calls)
	}
}

func TestUserCredentialsExplainTheWays(t *testing.T) {
	file := filepath.Join(t.TempDir(), "adc.json")
	os.WriteFile(file, []byte(`{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}`), 0o600)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", file)
	_, err := idTokenSource(context.Background(), "https://ingest.example.com", func(string) string { return "" }, authDeps{})
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitAuth {
		t.Fatalf("user ADC: %v, want an exit %d error", err, exitAuth)
	}
	for _, want := range []string{"user credentials", envImpersonate, envIDTokenCommand, "--project="} {
		if !strings.Contains(ee.msg, want) {
			t.Errorf("message lacks %q:\n%s", want, ee.msg)
		}
	}
}
