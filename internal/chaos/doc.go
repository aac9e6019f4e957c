// Package chaos holds the chaos suite (issue 10): a whole Dispatch — 2 API replicas, 2 outbox
// relays, 3 workers — on a PostgreSQL and a Redis of its own, under an order pipeline load,
// while programs are SIGKILLed at random and Redis and PostgreSQL restart; then, once it has
// converged, invariants read from the database.
//
// The suite is a test built only with the chaos tag (make chaos, make chaos-short); see
// docs/chaos.md.
package chaos
