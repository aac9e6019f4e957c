package outbox

// Idle reports whether the Waker has no NOTIFY in flight nor due: a Wake now starts a send.
func (w *Waker) Idle() bool { return w.state.Load() == idle }
