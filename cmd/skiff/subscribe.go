package main

import "errors"

// SubscribeCmd is `skiff subscribe`. Not implemented yet.
type SubscribeCmd struct{}

// Run reports that the command is not built yet.
func (c *SubscribeCmd) Run(rt *Runtime) error {
	return errors.New("skiff subscribe: not implemented yet")
}
