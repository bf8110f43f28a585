package config

// Keys returns every key a config may set, sorted: the list that the
// reference, virtiofsd-shim(8), must document (test/docstest checks it).
func Keys() []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	return names
}
