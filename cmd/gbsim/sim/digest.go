package sim

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/icholy/digest"
)

// randomHex returns n random bytes in hex, for nonces, opaques, tags and Call-IDs.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// randomUint32 returns a random 32-bit number, for RTP sequence and timestamp origins.
func randomUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// digestResponse computes the RFC 2617 request-digest with MD5, for no qop or qop=auth.
func digestResponse(cred *digest.Credentials, method, password string) (string, error) {
	if cred.Algorithm != "" && !strings.EqualFold(cred.Algorithm, "MD5") {
		return "", fmt.Errorf("digest algorithm %q not supported, only MD5", cred.Algorithm)
	}
	ha1 := md5Hex(cred.Username + ":" + cred.Realm + ":" + password)
	ha2 := md5Hex(method + ":" + cred.URI)
	switch cred.QOP {
	case "":
		return md5Hex(ha1 + ":" + cred.Nonce + ":" + ha2), nil
	case "auth":
		return md5Hex(fmt.Sprintf("%s:%s:%08x:%s:auth:%s", ha1, cred.Nonce, cred.Nc, cred.Cnonce, ha2)), nil
	default:
		return "", fmt.Errorf("digest qop %q not supported, only auth", cred.QOP)
	}
}

// verifyDigest reports whether cred proves knowledge of password for a request with this method.
func verifyDigest(cred *digest.Credentials, method, password string) error {
	want, err := digestResponse(cred, method, password)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(cred.Response))) != 1 {
		return fmt.Errorf("digest response mismatch for user %q", cred.Username)
	}
	return nil
}
