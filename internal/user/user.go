// Package user is the users domain: accounts, addresses, validation, the level rules of
// SPEC §2 and the service that changes users together with their outbox rows.
package user

import (
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/i18n"
)

// Errors of the users domain.
var (
	ErrNotFound       = apperr.New(apperr.NotFound, "users.errors.notFound")
	ErrEmailTaken     = apperr.New(apperr.Conflict, "users.errors.emailAlreadyExists")
	ErrWrongPassword  = apperr.New(apperr.Forbidden, "users.errors.wrongPassword")
	ErrRankTooLow     = apperr.New(apperr.Forbidden, "users.errors.insufficientLevel")
	ErrRoleNotAllowed = apperr.New(apperr.Forbidden, "users.errors.roleNotAllowed")
)

// User is an account.
type User struct {
	ID               uuid.UUID
	Name             string
	Email            string
	PasswordHash     string
	Role             auth.Role
	Language         string
	StripeCustomerID string
	Address          *Address
	CreatedAt        time.Time
	UpdatedAt        time.Time
	DeletedAt        *time.Time
}

// Address is a postal address; it is given whole or not at all.
type Address struct {
	Line1      string  `json:"line1"`
	Line2      *string `json:"line2"`
	City       string  `json:"city"`
	State      string  `json:"state"`
	PostalCode string  `json:"postalCode"`
	Country    string  `json:"country"`
}

// SignUp is the body of POST /v1/users.
type SignUp struct {
	Name     string   `json:"name"`
	Email    string   `json:"email"`
	Password string   `json:"password"`
	Language *string  `json:"language"`
	Address  *Address `json:"address"`
}

// AdminCreate is the body of POST /v1/admin/users: a sign-up with a role (default user).
type AdminCreate struct {
	SignUp
	Role *string `json:"role"`
}

// Update is the body of PATCH /v1/users/me; absent (or null) fields are left alone.
type Update struct {
	Name            *string  `json:"name"`
	Email           *string  `json:"email"`
	Language        *string  `json:"language"`
	Address         *Address `json:"address"`
	Password        *string  `json:"password"`
	CurrentPassword *string  `json:"currentPassword"`
}

// AdminUpdate is the body of PATCH /v1/admin/users/:id. An admin sets a password without the
// current one.
type AdminUpdate struct {
	Name     *string  `json:"name"`
	Email    *string  `json:"email"`
	Language *string  `json:"language"`
	Address  *Address `json:"address"`
	Password *string  `json:"password"`
	Role     *string  `json:"role"`
}

// Filter selects users in lists.
type Filter struct {
	Name  string
	Email string
	Role  string
}

func (s *SignUp) normalize() {
	s.Name = strings.TrimSpace(s.Name)
	s.Email = NormalizeEmail(s.Email)
	if s.Address != nil {
		s.Address.normalize()
	}
}

func (s SignUp) validate(v *apperr.Validation) {
	v.Text("name", s.Name, 2, 100)
	validateEmail(v, "email", s.Email)
	validatePassword(v, "password", s.Password)
	if s.Language != nil {
		validateLanguage(v, "language", *s.Language)
	}
	if s.Address != nil {
		s.Address.validate(v, "address")
	}
}

func (u *Update) normalize() {
	if u.Name != nil {
		*u.Name = strings.TrimSpace(*u.Name)
	}
	if u.Email != nil {
		*u.Email = NormalizeEmail(*u.Email)
	}
	if u.Address != nil {
		u.Address.normalize()
	}
}

// check validates an update, with more (if any) for the caller's own fields. An email the
// rules refuse is a fault only when it is not the account's own (read by current): an account
// made before the rules were tightened may send its email back with the rest of its profile.
// kept reports such an email let through, which the transaction must find unchanged
// (keptEmail).
func (u Update) check(more func(*apperr.Validation), current func() (string, error)) (kept bool, err error) {
	if u.Email != nil {
		var e apperr.Validation
		validateEmail(&e, "email", *u.Email)
		if e.Err() != nil {
			own, err := current()
			if err != nil {
				return false, err
			}
			kept = own == *u.Email
		}
	}
	var v apperr.Validation
	u.validate(&v, !kept)
	if more != nil {
		more(&v)
	}
	return kept, v.Err()
}

// keptEmail refuses, inside the update's transaction, an email check let through as the
// account's own (kept) that is no longer its own (changed meanwhile).
func keptEmail(email *string, kept bool, own string) error {
	if !kept || *email == own {
		return nil
	}
	var v apperr.Validation
	validateEmail(&v, "email", *email)
	return v.Err()
}

// validate checks the update's fields, the email only when email is set (it is checked once).
func (u Update) validate(v *apperr.Validation, email bool) {
	if u.Name != nil {
		v.Text("name", *u.Name, 2, 100)
	}
	if u.Email != nil && email {
		validateEmail(v, "email", *u.Email)
	}
	if u.Language != nil {
		validateLanguage(v, "language", *u.Language)
	}
	if u.Address != nil {
		u.Address.validate(v, "address")
	}
	if u.Password != nil {
		validatePassword(v, "password", *u.Password)
	}
}

// NormalizeEmail is the form an email is stored and looked up in. Login uses it too, so that
// matching does not depend on the database's own case folding (its locale).
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func validateEmail(v *apperr.Validation, field, email string) {
	if !v.Required(field, email) {
		return
	}
	addr, err := mail.ParseAddress(email)
	domain := email[strings.LastIndexByte(email, '@')+1:]
	local := email[:len(email)-len(domain)]
	// net/mail takes any rune past ASCII, invisible ones too (U+200B, bidi controls), and
	// compatibility forms (fullwidth letters): two addresses that only look alike should not be
	// two accounts. The local part must be printable and in NFKC; the domain a host name as IDNA
	// registers one, which refuses those and a domain literal, and takes the joiners U+200C and
	// U+200D where a script needs them (Persian, Indic scripts).
	_, notHost := idna.Registration.ToASCII(domain)
	ok := err == nil && addr.Address == email && addr.Name == "" && utf8.RuneCountInString(email) <= 254 &&
		strings.Contains(domain, ".") && notHost == nil &&
		!strings.ContainsFunc(local, func(r rune) bool { return !unicode.IsPrint(r) }) && norm.NFKC.IsNormalString(local)
	v.Check(ok, field, "validation.email")
}

func validatePassword(v *apperr.Validation, field, pw string) {
	v.Length(field, pw, 8, 128)
}

func validateLanguage(v *apperr.Validation, field, lang string) {
	v.OneOf(field, lang, i18n.Languages...)
}

func validateRole(v *apperr.Validation, field, role string) {
	names := make([]string, len(auth.Roles))
	for i, r := range auth.Roles {
		names[i] = string(r)
	}
	v.OneOf(field, role, names...)
}

func (a *Address) normalize() {
	a.Line1 = strings.TrimSpace(a.Line1)
	a.City = strings.TrimSpace(a.City)
	a.State = strings.TrimSpace(a.State)
	a.PostalCode = strings.TrimSpace(a.PostalCode)
	a.Country = strings.ToUpper(strings.TrimSpace(a.Country))
	if a.Line2 != nil {
		if l2 := strings.TrimSpace(*a.Line2); l2 == "" {
			a.Line2 = nil
		} else {
			a.Line2 = &l2
		}
	}
}

func (a Address) validate(v *apperr.Validation, prefix string) {
	v.Text(prefix+".line1", a.Line1, 1, 200)
	if a.Line2 != nil {
		v.Text(prefix+".line2", *a.Line2, 0, 200)
	}
	v.Text(prefix+".city", a.City, 1, 100)
	v.Text(prefix+".state", a.State, 1, 100)
	v.Text(prefix+".postalCode", a.PostalCode, 1, 20)
	if v.Required(prefix+".country", a.Country) {
		v.Check(IsCountry(a.Country), prefix+".country", "validation.country")
	}
}
