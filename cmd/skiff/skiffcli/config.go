package skiffcli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
)

// strictJSON loads a --config file as kong.JSON does (keys are flag names: log-format,
// log_format or logFormat) and refuses a key that is no flag of any command, naming it: a
// misspelt key would otherwise be ignored without a word.
func strictJSON(r io.Reader) (kong.Resolver, error) {
	name := "config file"
	if f, ok := r.(*os.File); ok {
		name = f.Name()
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	res, err := kong.JSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &strictResolver{Resolver: res, name: name, keys: keys}, nil
}

type strictResolver struct {
	kong.Resolver
	name string
	keys map[string]json.RawMessage
}

// Validate refuses keys that name no flag.
func (s *strictResolver) Validate(app *kong.Application) error {
	known := map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			for _, k := range flagKeys(f.Name) {
				known[k] = true
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(app.Node)
	var unknown []string
	for k := range s.keys {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("%s: unknown key %q (keys are flag names such as \"provider\" or \"log-format\")", s.name, unknown[0])
}

// flagKeys are the spellings kong.JSON looks a flag up by: as written, with underscores, and
// in camel case.
func flagKeys(flag string) []string {
	parts := strings.Split(flag, "-")
	camel := parts[0]
	for _, p := range parts[1:] {
		if p != "" {
			camel += strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return []string{flag, strings.ReplaceAll(flag, "-", "_"), camel}
}
