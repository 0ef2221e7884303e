package skiffcli

import (
	"errors"

	"github.com/skiffdb/skiff/handlers"
)

// Option configures the command line that Main and Run build: WithHandler, WithRegistry,
// WithVersion, or an Options value.
type Option interface {
	apply(*settings)
}

// settings is what the options make: Options, and the handlers to add to its registry.
type settings struct {
	Options
	added []added
}

type added struct {
	name string
	f    handlers.Factory
}

type optionFunc func(*settings)

func (f optionFunc) apply(s *settings) { f(s) }

// apply makes Options an Option: its non-zero fields replace what options before it set.
func (o Options) apply(s *settings) {
	if o.Registry != nil {
		s.Registry = o.Registry
	}
	if o.Version != "" {
		s.Version = o.Version
	}
}

// WithHandler adds a custom handler under name to the binary's registry (the built-in
// handlers, or WithRegistry's): subscribe --handler T=name chooses it for a table, and the
// worker, the initial copy, resync and compare run it. A name already registered (a built-in
// one too) makes Main exit 2 and Run return 2, naming it.
//
//	skiffcli.Main(skiffcli.WithHandler("legacy", legacy.New))
func WithHandler(name string, f handlers.Factory) Option {
	return optionFunc(func(s *settings) { s.added = append(s.added, added{name, f}) })
}

// WithRegistry makes reg the binary's registry (Options.Registry); WithHandler adds to it.
func WithRegistry(reg *handlers.Registry) Option {
	return optionFunc(func(s *settings) { s.Registry = reg })
}

// WithVersion sets what --version prints (Options.Version).
func WithVersion(v string) Option {
	return optionFunc(func(s *settings) { s.Version = v })
}

// resolveOptions applies opts in order and returns the Options they make: a registry (the built-in
// handlers unless given) holding every WithHandler.
func resolveOptions(opts []Option) (Options, error) {
	var s settings
	for _, o := range opts {
		if o != nil {
			o.apply(&s)
		}
	}
	if s.Registry == nil {
		s.Registry = handlers.NewRegistry()
	}
	var errs []error
	for _, a := range s.added {
		errs = append(errs, s.Registry.Register(a.name, a.f))
	}
	return s.Options, errors.Join(errs...)
}
