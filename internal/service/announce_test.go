package service

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// threadTable is a process table whose thread counts a test changes.
type threadTable struct {
	mu sync.Mutex
	n  map[int]int
}

func (tt *threadTable) threads(pid int) (int, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	n, ok := tt.n[pid]
	return n, ok
}

func (tt *threadTable) set(pid, n int) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	tt.n[pid] = n
}

// virtiofsd (pid 10) and its sandboxed child (11): the child's
// preparation thread ends, and the wait with it.
func TestTheReloadWaitsUntilVirtiofsdsPreparationThreadHasEnded(t *testing.T) {
	tt := &threadTable{n: map[int]int{10: 1, 11: 4}}
	pids := []int{10, 11}
	baseline := treeThreads(pids, tt.threads)
	assert.Equal(t, 5, baseline)
	tt.set(11, 5) // the announce started the thread

	done := make(chan bool, 1)
	go func() { done <- awaitThreads(context.Background(), pids, baseline, tt.threads, time.Millisecond) }()
	select {
	case <-done:
		t.Fatal("the wait ended while the preparation ran")
	case <-time.After(20 * time.Millisecond):
	}
	tt.set(11, 4)
	select {
	case ok := <-done:
		assert.True(t, ok)
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not end with the thread")
	}
}

func TestTheReloadStopsWaitingForAVirtiofsdThatIsGoneOrAtTheLimit(t *testing.T) {
	tt := &threadTable{n: map[int]int{10: 1, 11: 5}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.False(t, awaitThreads(ctx, []int{10, 11}, 5-1, tt.threads, time.Millisecond), "the limit")

	tt = &threadTable{n: map[int]int{11: 5}}
	assert.False(t, awaitThreads(context.Background(), []int{10, 11}, 4, tt.threads, time.Millisecond), "virtiofsd is gone")
}
