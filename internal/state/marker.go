package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// MarkerVersion is the version of the marker's format, apart from the state
// file's (Version): a marker outlives the shim that wrote it (release writes
// it, resume reads it after the session, perhaps from an upgraded package),
// and one read as a zero Deferral loses the enablement that resume checks.
const MarkerVersion = 1

// Deferral is the content of the deferred-restart marker,
// %t/virtiofsd/NAME.restart. While it exists, the socket's start is a
// skipped condition (virtiofsd@.socket: ConditionPathExists=!): release
// writes it when the shim keeps serving a VM and the socket restarts, and
// resume removes it once it has queued the socket's start again.
type Deferral struct {
	Version int `json:"version"` // MarkerVersion
	// Since is when release deferred the restart.
	Since time.Time `json:"since"`
	// UnitFileState is the socket's enablement (systemd's UnitFileState:
	// enabled, enabled-runtime, disabled, ...) when the restart was
	// deferred: resume starts the socket only if it has not changed
	// (disable --now, mask).
	UnitFileState string `json:"unit_file_state"`
	// ResumeError is why resume could not start the socket again, ""
	// otherwise. The marker then stays (check reports it).
	ResumeError string `json:"resume_error,omitempty"`
}

// WriteMarker writes the marker atomically.
func WriteMarker(path string, d Deferral) error {
	return writeMarker(path, d, MarkerVersion)
}

func writeMarker(path string, d Deferral, version int) error {
	d.Version = version
	b, err := json.MarshalIndent(&d, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ReadMarker reads the marker: (nil, nil) when there is none. A marker
// that is not a Deferral (written by hand: `touch`) still defers, and
// reads as a zero Deferral.
func ReadMarker(path string) (*Deferral, error) {
	return readMarker(path, MarkerVersion)
}

// readMarker is ReadMarker for a reader of the given format version.
func readMarker(path string, version int) (*Deferral, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var d Deferral
	if json.Unmarshal(b, &d) != nil || d.Version != version {
		return &Deferral{}, nil
	}
	return &d, nil
}

// RemoveMarker removes the marker; a missing one is no error.
func RemoveMarker(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
