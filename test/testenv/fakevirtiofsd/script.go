package fakevirtiofsd

import (
	"os"
	"path/filepath"
	"strings"
)

// Script writes dir/virtiofsd, a shell script that runs the test binary as
// a fake virtiofsd of flavor (the test's TestMain must call Main), for a
// config's VIRTIOFSD=, which must be a path. It returns the script's path.
func Script(dir, flavor string) (string, error) {
	p := filepath.Join(dir, "virtiofsd")
	env := strings.Join(Env(flavor, Ready), " ")
	return p, os.WriteFile(p, []byte("#!/bin/sh\nexec env "+env+" "+os.Args[0]+" \"$@\"\n"), 0o755)
}
