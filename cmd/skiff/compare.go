package main

import "errors"

// CompareCmd is `skiff compare`. Not implemented yet.
type CompareCmd struct{}

// Run reports that the command is not built yet.
func (c *CompareCmd) Run(rt *Runtime) error { return errors.New("skiff compare: not implemented yet") }
