// Package robustness checks how virtiofsd-shim behaves when things go wrong:
// the shim killed, journald restarted, virtiofsd missing, the shared
// directory removed while serving, and a hundred instances starting at once.
// It holds tests only; they need root and skip, saying so, without it.
package robustness
