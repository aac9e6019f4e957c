// Package auth holds roles and their levels, password hashing (argon2id), JWT access and
// refresh tokens, Postgres-backed sessions with refresh rotation and reuse detection, and the
// Redis denylist that makes a logout take effect at once.
package auth

import "github.com/google/uuid"

// Role is a user's role. Its level orders roles for the no-escalation rules.
type Role string

// The roles of SPEC §2.
const (
	RoleSuperadmin Role = "superadmin"
	RoleAdmin      Role = "admin"
	RoleShipper    Role = "shipper"
	RoleDelivery   Role = "delivery"
	RoleFinancial  Role = "financial"
	RoleUser       Role = "user"
)

var levels = map[Role]int{
	RoleSuperadmin: 99, RoleAdmin: 10, RoleShipper: 2, RoleDelivery: 2, RoleFinancial: 2, RoleUser: 1,
}

// Roles lists every role, highest level first.
var Roles = []Role{RoleSuperadmin, RoleAdmin, RoleShipper, RoleDelivery, RoleFinancial, RoleUser}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { _, ok := levels[r]; return ok }

// Level returns r's level (0 for an unknown role).
func (r Role) Level() int { return levels[r] }

// Outranks reports whether r may manage a user of role other or assign other: only roles
// strictly below one's own.
func (r Role) Outranks(other Role) bool { return r.Level() > other.Level() }

// Group is a set of roles allowed on a route.
type Group []Role

// The guard groups of SPEC §2.
var (
	Admins    = Group{RoleSuperadmin, RoleAdmin}
	Financial = Group{RoleSuperadmin, RoleAdmin, RoleFinancial}
	Shipping  = Group{RoleSuperadmin, RoleAdmin, RoleShipper}
	Delivery  = Group{RoleSuperadmin, RoleAdmin, RoleDelivery}
)

// Allows reports whether r belongs to g.
func (g Group) Allows(r Role) bool {
	for _, x := range g {
		if x == r {
			return true
		}
	}
	return false
}

// Principal is the authenticated caller of a request, with the role read from the database.
type Principal struct {
	UserID    uuid.UUID
	SessionID uuid.UUID
	Role      Role
	Language  string
}
