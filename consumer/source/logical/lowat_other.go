//go:build !unix

package logical

import "net"

// lowWaterMark: no receive low-water mark here; the stream is never busy (see coalescer).
func lowWaterMark(net.Conn) func(int) error { return nil }
