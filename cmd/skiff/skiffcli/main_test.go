package skiffcli

import (
	"testing"

	"github.com/skiffdb/skiff/internal/pgtest"
)

// TestMain stops the shared PostgreSQL servers the command tests start.
func TestMain(m *testing.M) { pgtest.Main(m) }
