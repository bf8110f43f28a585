package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// IDMap is one uid or gid mapping of a rootless virtiofsd's user namespace,
// as virtiofsd's --uid-map/--gid-map take it: Count ids from Inside in the
// namespace are Outside.. on the host.
type IDMap struct {
	Inside, Outside, Count uint32
}

// String is virtiofsd's syntax, ":inside:outside:count:".
func (m IDMap) String() string {
	return fmt.Sprintf(":%d:%d:%d:", m.Inside, m.Outside, m.Count)
}

// idMapSyntax is what ParseIDMap's errors show.
const idMapSyntax = "want :NAMESPACE_ID:HOST_ID:COUNT: as virtiofsd's --uid-map/--gid-map take it, " +
	"e.g. :0:100000:65536: for a range of /etc/subuid, or leave it unset to map only your own id"

// ParseIDMap reads ":inside:outside:count:". Ids are 0 to 4294967294 (-1 is
// no id), count is at least 1, and neither range may pass the last id.
func ParseIDMap(s string) (IDMap, error) {
	if !strings.HasPrefix(s, ":") || !strings.HasSuffix(s, ":") || len(s) < 2 {
		return IDMap{}, errors.New(idMapSyntax)
	}
	f := strings.Split(s[1:len(s)-1], ":")
	if len(f) != 3 {
		return IDMap{}, errors.New(idMapSyntax)
	}
	var n [3]uint32
	for i, v := range f {
		u, err := strconv.ParseUint(v, 10, 32)
		if err != nil || strings.Trim(v, "0123456789") != "" {
			return IDMap{}, fmt.Errorf("%q is not a whole number from 0 to %d: %s", v, uint32(math.MaxUint32-1), idMapSyntax)
		}
		n[i] = uint32(u)
	}
	m := IDMap{Inside: n[0], Outside: n[1], Count: n[2]}
	const last = math.MaxUint32 - 1 // (uid_t)-1 is "no id"
	switch {
	case m.Count == 0:
		return IDMap{}, errors.New("COUNT is 0: map at least one id")
	case uint64(m.Inside)+uint64(m.Count)-1 > last:
		return IDMap{}, fmt.Errorf("the namespace range %d+%d passes the last id %d", m.Inside, m.Count, uint32(last))
	case uint64(m.Outside)+uint64(m.Count)-1 > last:
		return IDMap{}, fmt.Errorf("the host range %d+%d passes the last id %d", m.Outside, m.Count, uint32(last))
	}
	return m, nil
}

func setIDMap(dst **IDMap, v string) error {
	if v == "" {
		*dst = nil
		return nil
	}
	m, err := ParseIDMap(v)
	if err != nil {
		return err
	}
	*dst = &m
	return nil
}
