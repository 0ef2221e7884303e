package main

import "errors"

// WorkerCmd is `skiff worker`. Not implemented yet.
type WorkerCmd struct{}

// Run reports that the command is not built yet.
func (c *WorkerCmd) Run(rt *Runtime) error { return errors.New("skiff worker: not implemented yet") }
