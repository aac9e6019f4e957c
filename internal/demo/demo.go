// Package demo seeds the demo data of SPEC §10: the admin, one user per staff role and a small
// catalog. Seeding is idempotent: existing users and items are never changed, and deleted ones
// never come back.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// Password is the demo users' password.
const Password = "admin12345"

// AdminEmail is the email of the demo admin.
const AdminEmail = "admin@dispatch.local"

// accounts are the seeded users by email.
var accounts = []struct {
	Name, Email string
	Role        auth.Role
}{
	{"Dispatch Admin", AdminEmail, auth.RoleAdmin},
	{"Dispatch Superadmin", "superadmin@dispatch.local", auth.RoleSuperadmin},
	{"Dispatch Shipper", "shipper@dispatch.local", auth.RoleShipper},
	{"Dispatch Delivery", "delivery@dispatch.local", auth.RoleDelivery},
	{"Dispatch Financial", "financial@dispatch.local", auth.RoleFinancial},
}

// items are the seeded catalog, with fixed ids so a reseed recognizes them. Their stock lasts
// hours of load at the rates a two-core machine serves (docs/decisions.md, "Demo stock").
var items = []catalog.Item{
	{ID: uuid.MustParse("0193a000-0000-7000-8000-000000000001"), Name: "Mechanical Keyboard", Description: "Tenkeyless keyboard with hot-swappable switches.", Price: 8900, Currency: "usd", Stock: 10_000_000},
	{ID: uuid.MustParse("0193a000-0000-7000-8000-000000000002"), Name: "Wireless Mouse", Description: "Ergonomic mouse, 70 days on one charge.", Price: 3900, Currency: "usd", Stock: 10_000_000},
	{ID: uuid.MustParse("0193a000-0000-7000-8000-000000000003"), Name: "USB-C Hub", Description: "Seven ports: HDMI, Ethernet, SD and four USB.", Price: 4500, Currency: "usd", Stock: 10_000_000},
	{ID: uuid.MustParse("0193a000-0000-7000-8000-000000000004"), Name: "27-inch Monitor", Description: "1440p IPS panel at 144 Hz.", Price: 32900, Currency: "usd", Stock: 10_000_000},
	{ID: uuid.MustParse("0193a000-0000-7000-8000-000000000005"), Name: "Laptop Stand", Description: "Aluminium stand with adjustable height.", Price: 2900, Currency: "usd", Stock: 10_000_000},
	{ID: uuid.MustParse("0193a000-0000-7000-8000-000000000006"), Name: "Noise-Cancelling Headphones", Description: "Over-ear, 30 hours of battery.", Price: 19900, Currency: "usd", Stock: 10_000_000},
}

// Seed creates whatever demo data is missing.
func Seed(ctx context.Context, db *postgres.DB, users *user.Service, cat *catalog.Service, log *slog.Logger) error {
	for _, u := range accounts {
		// Deleted, a demo account stays deleted: an operator may have deleted it so that its
		// known password no longer opens the deployment.
		known, err := userdb.Store{}.Registered(ctx, db, u.Email)
		if err != nil {
			return fmt.Errorf("demo: seed %s: %w", u.Email, err)
		}
		if known {
			continue
		}
		_, err = users.Provision(ctx, user.SignUp{Name: u.Name, Email: u.Email, Password: Password}, u.Role)
		switch {
		case errors.Is(err, user.ErrEmailTaken):
		case err != nil:
			return fmt.Errorf("demo: seed %s: %w", u.Email, err)
		default:
			log.InfoContext(ctx, "demo user created", "email", u.Email, "role", u.Role)
		}
	}
	var created []uuid.UUID
	for _, it := range items {
		err := catalogdb.Store{}.Insert(ctx, db, &it)
		switch {
		case postgres.IsCode(err, postgres.UniqueViolation):
		case err != nil:
			return fmt.Errorf("demo: seed item %s: %w", it.Name, err)
		default:
			created = append(created, it.ID)
		}
	}
	if len(created) > 0 {
		cat.Cache.Invalidate(ctx, created...)
		log.InfoContext(ctx, "demo items created", "count", len(created))
	}
	return nil
}

// Items returns the seeded catalog (a copy: the list is the package's).
func Items() []catalog.Item { return slices.Clone(items) }
