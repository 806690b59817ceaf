//go:build !unix

package media

import "errors"

var errAddrInUse = errors.New("address in use (not detected on this platform)")
