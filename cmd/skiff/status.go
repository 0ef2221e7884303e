package main

import "errors"

// StatusCmd is `skiff status`. Not implemented yet.
type StatusCmd struct{}

// Run reports that the command is not built yet.
func (c *StatusCmd) Run(rt *Runtime) error { return errors.New("skiff status: not implemented yet") }
