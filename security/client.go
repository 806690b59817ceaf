package security

import (
	"fmt"

	"github.com/icholy/digest"
)

// Authorize answers a digest challenge (the WWW-Authenticate or
// Proxy-Authenticate value) for our own requests to an upper platform and
// returns the Authorization value. MD5 and SHA-256, with or without
// qop=auth, via github.com/icholy/digest (it has no -sess variants). We do
// not use sipgo's DoDigestAuth because it rebuilds Via from the connection's
// local address, which is 0.0.0.0 when we listen on all interfaces.
func Authorize(challenge, method, uri, username, password string) (string, error) {
	ch, err := digest.ParseChallenge(challenge)
	if err != nil {
		return "", fmt.Errorf("%w: challenge %q: %v", ErrMalformed, challenge, err)
	}
	cred, err := digest.Digest(ch, digest.Options{
		Method:   method,
		URI:      uri,
		Username: username,
		Password: password,
		Count:    1,
	})
	if err != nil {
		return "", fmt.Errorf("answer challenge: %w", err)
	}
	return cred.String(), nil
}
