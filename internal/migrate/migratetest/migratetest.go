// Package migratetest gives tests databases with skiff's schemas installed. It lives apart
// from internal/pgtest so that internal/migrate's own tests can use pgtest without a cycle.
package migratetest

import (
	"context"
	"testing"
	"time"

	"github.com/skiffdb/skiff/internal/migrate"
	"github.com/skiffdb/skiff/internal/pg"
	"github.com/skiffdb/skiff/internal/pgtest"
)

// Install installs the roles' schemas (provider, target or both) into the database at url,
// failing the test on any error.
func Install(t testing.TB, url string, roles ...migrate.Role) {
	t.Helper()
	cfg, err := pg.ParseConfig(url, "skiff-test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, role := range roles {
		if _, err := migrate.Up(ctx, cfg, role); err != nil {
			t.Fatalf("install the %s schema: %v", role, err)
		}
	}
}

// NewDB creates a fresh database on the shared server of a version ("" = default) with the
// roles' schemas installed, and returns its URL.
func NewDB(t testing.TB, version string, roles ...migrate.Role) string {
	t.Helper()
	url := pgtest.Shared(t, version).NewDB(t)
	Install(t, url, roles...)
	return url
}
