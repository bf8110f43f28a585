package main

import (
	"context"

	"github.com/virtiofsd-shim/virtiofsd-shim/test/testenv/shimbox"
)

// quickStart is the quick start of README.md as the demo runs it in its
// private systemd: the example config and the commands typed before the VM
// starts and after it has run. The demo adds only what a reader does not
// type (a probe, the VM, one journal entry in full);
// TestREADMEQuickStartIsTheDemos keeps the README's blocks the same as this.
type quickStart struct {
	instance string
	config   []string // the config's lines after SHARED_DIR=, which the demo makes
	beforeVM []command
	afterVM  []command
}

// command is one command of the quick start, with what the demo says first
// (nothing: the same step as the command before).
type command struct {
	step     string
	argv     []string
	informal bool // shown only: its exit status is not the demo's (systemctl status of an inactive unit is 3)
}

// shim is the installed binary, off $PATH, as the README spells it.
const shim = "/usr/libexec/virtiofsd-shim"

func theQuickStart() quickStart {
	return quickStart{
		instance: "demo",
		config:   []string{"CACHE=auto"},
		beforeVM: []command{
			{step: "Checking the config offline: the exact virtiofsd command line, the generator's drop-ins",
				argv: []string{shim, "check", "demo"}},
			{step: "Enabling the instance: systemd now owns /run/virtiofsd/demo.sock; nothing runs until a VM connects",
				argv: []string{"systemctl", "enable", "--now", "virtiofsd@demo.socket"}},
			{argv: []string{"systemctl", "status", "virtiofsd@demo.socket", "virtiofsd@demo.service"}, informal: true},
		},
		afterVM: []command{
			{step: "The journal: virtiofsd's own lines, with fields",
				argv: []string{"journalctl", "-u", "virtiofsd@demo"}, informal: true},
			{step: "Every instance at a glance",
				argv: []string{shim, "list"}, informal: true},
		},
	}
}

// runAll runs commands in the box, each after its step, and stops at the
// first that fails unless it is informal.
func runAll(ctx context.Context, b *shimbox.Box, cmds []command) error {
	for _, c := range cmds {
		if c.step != "" {
			step("%s", c.step)
		}
		if _, err := show(ctx, b, c.argv[0], c.argv[1:]...); err != nil && !c.informal {
			return err
		}
	}
	return nil
}
