package main

import "errors"

// TickerCmd is `skiff ticker`. Not implemented yet.
type TickerCmd struct{}

// Run reports that the command is not built yet.
func (c *TickerCmd) Run(rt *Runtime) error { return errors.New("skiff ticker: not implemented yet") }
