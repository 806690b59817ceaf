//go:build unix

package media

import "syscall"

var errAddrInUse error = syscall.EADDRINUSE
