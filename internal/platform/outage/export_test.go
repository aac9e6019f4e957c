package outage

import "time"

// SetClock makes b read the time from now.
func SetClock(b *Breaker, now func() time.Time) { b.now = now }
