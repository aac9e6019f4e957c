package notificationdb

// Queued is how many deliveries wait for the insert in flight.
func (s *Store) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}
