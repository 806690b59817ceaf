package cascade

import "sync"

// tasks are the short jobs handlers start after answering (query answers,
// acknowledgements, catalog transfers, forwarded alarms). Close waits for
// them, so none sends or logs after the cascade is gone.
type tasks struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// spawn runs f on its own goroutine unless the cascade is closing (then f
// is dropped: its context would be cancelled anyway). The closed check and
// the Add share mu, so the WaitGroup never grows while closeAndWait waits.
func (t *tasks) spawn(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.wg.Go(f)
}

// closeAndWait refuses new tasks and waits for the running ones.
func (t *tasks) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
