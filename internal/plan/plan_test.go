package plan

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtiofsd-shim/virtiofsd-shim/internal/config"
)

func TestIDMapsUnderNoNewPrivsAreRefusedWithTheWayOut(t *testing.T) {
	cfg, err := config.Parse(strings.NewReader("SHARED_DIR=/s\nGID_MAP=:0:100000:65536:\n"), "vm1.conf")
	require.NoError(t, err)
	assert.NoError(t, CheckIDMapPrivileges(cfg, "Name:\tx\nNoNewPrivs:\t0\n"))
	err = CheckIDMapPrivileges(cfg, "Name:\tx\nNoNewPrivs:\t1\n")
	assert.ErrorContains(t, err, "vm1.conf:2: GID_MAP= needs newuidmap/newgidmap")
	cfg.GIDMap = nil
	assert.NoError(t, CheckIDMapPrivileges(cfg, "NoNewPrivs:\t1\n"), "no map, nothing to refuse")
}
