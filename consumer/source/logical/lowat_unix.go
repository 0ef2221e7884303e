//go:build unix

package logical

import (
	"net"
	"syscall"
)

// lowWaterMark returns a function that sets the receive low-water mark (SO_RCVLOWAT) of a
// TCP connection, under any TLS layer; nil for other connections (a Unix-domain socket's
// readiness ignores the mark).
func lowWaterMark(c net.Conn) func(int) error {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(n int) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
		}); err != nil {
			return err
		}
		return serr
	}
}
