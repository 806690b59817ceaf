package security

import (
	"fmt"

	"github.com/icholy/digest"
)

// Authorize answers a digest challenge (the WWW-Authenticate or
// Proxy-Authenticate value) for our own requests to an upper platform and
// returns the Authorization value. MD5 and SHA-256, with or without
// qop=auth, via github.com/icholy/digest (it has no -sess variants); secret
// may be an HA1 of the challenge's hash. We do not use sipgo's DoDigestAuth
// because it rebuilds Via from the connection's local address, which is
// 0.0.0.0 when we listen on all interfaces, and cannot take an HA1.
func Authorize(challenge, method, uri, username string, secret Secret) (string, error) {
	ch, err := digest.ParseChallenge(challenge)
	if err != nil {
		return "", fmt.Errorf("%w: challenge %q: %w", ErrMalformed, clip(challenge), err)
	}
	alg, ok := parseAlgorithm(ch.Algorithm)
	if !ok || alg.sess() {
		return "", fmt.Errorf("answer challenge: algorithm %q is not supported (MD5 or SHA-256)", clip(ch.Algorithm))
	}
	ha1, err := ha1For(alg, username, ch.Realm, secret)
	if err != nil {
		return "", fmt.Errorf("answer challenge as %q: %w", username, err)
	}
	cred, err := digest.Digest(ch, digest.Options{
		Method:   method,
		URI:      uri,
		Username: username,
		A1:       ha1,
		Count:    1,
	})
	if err != nil {
		return "", fmt.Errorf("answer challenge: %w", err)
	}
	return cred.String(), nil
}
