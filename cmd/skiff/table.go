package main

import "errors"

// TableCmd is `skiff table`. Not implemented yet.
type TableCmd struct{}

// Run reports that the command is not built yet.
func (c *TableCmd) Run(rt *Runtime) error { return errors.New("skiff table: not implemented yet") }
