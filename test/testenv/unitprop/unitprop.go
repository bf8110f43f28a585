// Package unitprop reads units' properties with systemctl show, of a box's
// system manager (shimbox.Box) or of any manager a test reaches, and waits
// for a unit to end. Every suite reads properties through it.
package unitprop

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Manager runs systemctl with the arguments given, against one service
// manager, and returns its standard output (and, on failure, what it said).
// *shimbox.Box is one.
type Manager interface {
	Systemctl(ctx context.Context, args ...string) (string, error)
}

// Property returns one property of a unit, as systemctl show --value prints
// it (without the final newline).
func Property(ctx context.Context, m Manager, unit, prop string) (string, error) {
	out, err := m.Systemctl(ctx, "show", "-p", prop, "--value", unit)
	if err != nil {
		return "", fmt.Errorf("systemctl show -p %s %s: %w: %s", prop, unit, err, out)
	}
	return strings.TrimSpace(out), nil
}

// Show returns properties of a unit by name, as systemctl show prints them.
func Show(ctx context.Context, m Manager, unit string, props ...string) (map[string]string, error) {
	out, err := m.Systemctl(ctx, "show", "-p", strings.Join(props, ","), unit)
	if err != nil {
		return nil, fmt.Errorf("systemctl show -p %s %s: %w: %s", strings.Join(props, ","), unit, err, out)
	}
	return Parse(out), nil
}

// Parse reads systemctl show's KEY=value lines, of either manager.
func Parse(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// pollEvery is how often WaitInactive asks: often enough for the bench,
// which times what follows a session's end.
const pollEvery = 20 * time.Millisecond

// WaitInactive waits up to d for unit to end, and returns its ActiveState
// then: inactive, or failed. The error says what the unit was still doing
// when d ran out, or why systemctl could not tell.
func WaitInactive(ctx context.Context, m Manager, unit string, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		st, err := Property(ctx, m, unit, "ActiveState")
		switch {
		case err != nil:
			return "", err
		case st == "inactive" || st == "failed":
			return st, nil
		case time.Now().After(deadline):
			return st, fmt.Errorf("%s still %s after %v", unit, st, d)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("wait for %s to end: %w", unit, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}
