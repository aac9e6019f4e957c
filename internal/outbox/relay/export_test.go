package relay

import "context"

// RecoverOrphans runs one look for the tasks of silent workers, as Run does every orphanCheck.
func (r *Relay) RecoverOrphans(ctx context.Context) { r.recoverOrphans(ctx) }

// SilentFor is how long a lease goes unrenewed before its task is run again.
const SilentFor = silentFor
