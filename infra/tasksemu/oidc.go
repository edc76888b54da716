package tasksemu

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// OIDCIssuer is the iss claim of the emulator's tokens (the real service's tokens
// are issued by Google with this issuer, but signed by Google's keys).
const OIDCIssuer = "https://accounts.google.com"

// oidcKeyID names the emulator's signing key in the token header.
const oidcKeyID = "tasksemu-local"

// processKey is generated once per process: RSA key generation is slow under -race.
var processKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

// OIDCClaims are the claims of a token the emulator attaches to a task's request.
type OIDCClaims struct {
	Issuer        string `json:"iss"`
	Audience      string `json:"aud"`
	AuthorizedBy  string `json:"azp"`
	Subject       string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
	IssuedAt      int64  `json:"iat"`
	Expiry        int64  `json:"exp"`
}

// subjectFor derives a stable numeric subject from the service account email, as
// Google uses the account's numeric unique id.
func subjectFor(email string) string {
	h := sha256.Sum256([]byte(email))
	return strconv.FormatUint(binary.BigEndian.Uint64(h[:8])>>1, 10)
}

// signOIDC returns an RS256 JWT for email and audience, valid for one hour.
func (s *Server) signOIDC(email, audience string, now time.Time) (string, error) {
	key, err := s.key()
	if err != nil {
		return "", fmt.Errorf("oidc signing key: %w", err)
	}
	sub := subjectFor(email)
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": oidcKeyID})
	claims, err := json.Marshal(OIDCClaims{
		Issuer: OIDCIssuer, Audience: audience, AuthorizedBy: sub, Subject: sub,
		Email: email, EmailVerified: true, IssuedAt: now.Unix(), Expiry: now.Add(time.Hour).Unix(),
	})
	if err != nil {
		return "", fmt.Errorf("oidc claims: %w", err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("oidc sign: %w", err)
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// VerifyOIDCToken checks the signature (against this emulator's key) and expiry of
// a token the emulator sent, and returns its claims. Tokens are locally signed:
// Google's verifiers (e.g. google.golang.org/api/idtoken) reject them.
func (s *Server) VerifyOIDCToken(raw string) (OIDCClaims, error) {
	var c OIDCClaims
	parts := strings.Split(strings.TrimPrefix(raw, "Bearer "), ".")
	if len(parts) != 3 {
		return c, errors.New("tasksemu verify token: not a JWT")
	}
	enc := base64.RawURLEncoding
	sig, err := enc.DecodeString(parts[2])
	if err != nil {
		return c, fmt.Errorf("tasksemu verify token: signature: %w", err)
	}
	key, err := s.key()
	if err != nil {
		return c, fmt.Errorf("tasksemu verify token: %w", err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
		return c, fmt.Errorf("tasksemu verify token: %w", err)
	}
	payload, err := enc.DecodeString(parts[1])
	if err != nil {
		return c, fmt.Errorf("tasksemu verify token: payload: %w", err)
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, fmt.Errorf("tasksemu verify token: claims: %w", err)
	}
	if time.Now().Unix() >= c.Expiry {
		return c, errors.New("tasksemu verify token: expired")
	}
	return c, nil
}

// PublicKey returns the key that verifies the emulator's OIDC tokens.
func (s *Server) PublicKey() (*rsa.PublicKey, error) {
	key, err := s.key()
	if err != nil {
		return nil, fmt.Errorf("tasksemu public key: %w", err)
	}
	return &key.PublicKey, nil
}
