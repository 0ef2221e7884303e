package skiffcli

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/skiffdb/skiff/consumer/change"
	"github.com/skiffdb/skiff/handlers"
)

func nopFactory(change.Table, json.RawMessage) (handlers.Handler, error) {
	return handlers.Func(func(*change.Event) (bool, error) { return true, nil }), nil
}

// TestOptions: WithHandler adds to the built-in handlers, or to WithRegistry's (or an
// Options' Registry), in order; a name taken makes Run exit 2 naming it.
func TestOptions(t *testing.T) {
	t.Parallel()
	o, err := resolveOptions([]Option{WithHandler("legacy", nopFactory), WithVersion("v9")})
	require.NoError(t, err)
	require.Equal(t, []string{"columns", "filter", "legacy", "partition", "rename", "skip"}, o.Registry.Names())
	require.Equal(t, "v9", o.Version)

	reg := handlers.NewRegistry()
	o, err = resolveOptions([]Option{Options{Registry: reg, Version: "v1"}, WithHandler("a", nopFactory)})
	require.NoError(t, err)
	require.Same(t, reg, o.Registry)
	require.Contains(t, reg.Names(), "a")
	require.Equal(t, "v1", o.Version)

	o, err = resolveOptions(nil)
	require.NoError(t, err)
	require.Equal(t, handlers.NewRegistry().Names(), o.Registry.Names())

	var out, errb bytes.Buffer
	code := Run([]string{"--version"}, &out, &errb, WithHandler("filter", nopFactory))
	require.Equal(t, 2, code)
	require.Contains(t, errb.String(), `handler "filter" is already registered`)
	out.Reset()
	code = Run([]string{"--version"}, &out, &errb, WithVersion("v7"), WithHandler("mine", nopFactory))
	require.Equal(t, 0, code)
	require.Contains(t, out.String(), "v7")
}
