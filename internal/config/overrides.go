package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Override is a value given on the command line for a key of the config
// file: run's --cache=never is {Flag: "cache", Key: "CACHE", Value: "never"}.
type Override struct {
	Flag  string // the flag's name, without dashes, for errors
	Key   string // the config key it sets
	Value string
}

// Resolve makes the config of an instance of scope s as run and check see
// it: dir/<instance>.conf (see LoadIn), with each override applied over the
// file in order (see Config.Set). Without an instance, or when its file does
// not exist but an override names SHARED_DIR, the overrides alone make the
// config. The result always has a SHARED_DIR; errors are *Error or Errors,
// an override's naming its flag.
func Resolve(s Scope, dir, instance string, overrides []Override) (*Config, error) {
	sharedDirGiven := false
	for _, o := range overrides {
		sharedDirGiven = sharedDirGiven || o.Key == "SHARED_DIR"
	}
	cfg := &Config{Flavor: "auto", Front: "auto"}
	if instance != "" {
		_, statErr := os.Stat(filepath.Join(dir, instance+".conf"))
		if errors.Is(statErr, os.ErrNotExist) && sharedDirGiven {
			if err := ValidInstance(instance); err != nil {
				return nil, err
			}
		} else {
			c, err := LoadIn(s, dir, instance)
			if err != nil {
				return nil, err
			}
			cfg = c
		}
		cfg.Instance = instance
	}
	for _, o := range overrides {
		if err := cfg.Set(o.Key, o.Value); err != nil {
			return nil, fmt.Errorf("--%s: %w", o.Flag, err)
		}
	}
	if cfg.SharedDir == "" {
		return nil, &Error{Key: "SHARED_DIR", Code: CodeMissingShared, Msg: "no shared directory: pass --instance=NAME with SHARED_DIR= in " +
			filepath.Join(dir, "NAME.conf") + ", or --shared-dir=DIR"}
	}
	return cfg, nil
}
