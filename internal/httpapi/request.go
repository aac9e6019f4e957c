package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// MaxBodyBytes is the largest request body accepted (SPEC §1).
const MaxBodyBytes = 1 << 20

// decode reads a JSON object into dst strictly: unknown fields, wrong types, an empty body and
// trailing data are all 400s naming the problem; an oversized body is 413.
func decode(c *gin.Context, dst any) error {
	return decodeBody(c.Request.Body, dst, false)
}

// decodeOptional is decode for routes whose body may be empty.
func decodeOptional(c *gin.Context, dst any) error {
	return decodeBody(c.Request.Body, dst, true)
}

// noBody refuses a body on a route that takes none, as every route refuses what it does not
// know (SPEC §1): nothing, or an empty object, is accepted.
func noBody(c *gin.Context) error { return decodeOptional(c, &struct{}{}) }

// readBody reads a request's body. A body over the limit is a 413; one that had not arrived when
// the connection's read deadline passed is a 408 (a slow client, or a request that waited on an
// outage before reading it), not a malformed one.
func readBody(r io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(r)
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return raw, nil
	case errors.As(err, &tooLarge):
		return nil, apperr.ErrBodyTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, apperr.ErrBodyTimedOut.Wrap(err)
	}
	return nil, apperr.ErrMalformedJSON.Wrap(err)
}

func decodeBody(r io.Reader, dst any, optional bool) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	return DecodeJSON(raw, dst, optional)
}

// DecodeJSON is the strict decoding of request bodies, exported for the fuzz tests. A body is
// a JSON object: arrays and scalars are refused like bad syntax, and so is null where a body
// is required. Where it is optional, null means none, as it does for an optional field (SPEC
// §11): a client's helper that serialises a missing body sends it.
func DecodeJSON(raw []byte, dst any, optional bool) error {
	body := bytes.TrimSpace(raw)
	if len(body) == 0 || optional && string(body) == "null" {
		if optional {
			return nil
		}
		return apperr.ErrMalformedJSON
	}
	if body[0] != '{' {
		return apperr.ErrMalformedJSON
	}
	if err := checkText(raw); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(raw, dst, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apperr.ErrMalformedJSON
	}
	return exactFieldNames(raw, dst)
}

func decodeError(raw []byte, dst any, err error) error {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooLarge  *http.MaxBytesError
		unknownIx = strings.Index(err.Error(), "json: unknown field ")
	)
	switch {
	case errors.As(err, &tooLarge):
		return apperr.ErrBodyTooLarge
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return apperr.ErrMalformedJSON
		}
		field := typeErr.Field // encoding/json names the field without array indexes
		if p := valuePath(raw, typeErr.Offset); p != "" {
			field = p
		}
		return apperr.ErrValidation.WithDetails(apperr.Field(field, "validation.type", "type", jsonType(typeErr.Type.Kind().String())))
	case unknownIx == 0:
		if err := exactFieldNames(raw, dst); err != nil {
			return err // names the key with its path (encoding/json gives the key alone)
		}
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return apperr.ErrValidation.WithDetails(apperr.Field(field, "validation.unknownField"))
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return apperr.ErrMalformedJSON
	default:
		return apperr.ErrMalformedJSON
	}
}

// jsonType names the JSON type a Go kind decodes from, in the reader's language.
func jsonType(kind string) i18n.Term {
	name := "object"
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		name = "integer"
	case strings.HasPrefix(kind, "float"):
		name = "number"
	case kind == "string":
		name = "string"
	case kind == "bool":
		name = "boolean"
	case kind == "slice", kind == "array":
		name = "array"
	}
	return typeTerm(name)
}

func typeTerm(name string) i18n.Term { return i18n.Term("validation.types." + name) }

// pathID parses the :name path parameter as a UUID.
func pathID(c *gin.Context, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param(name))
	if err != nil || len(c.Param(name)) != 36 {
		return uuid.Nil, apperr.ErrInvalidID.With("param", name)
	}
	return id, nil
}

// Pagination limits (SPEC §1).
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// pageRequest reads ?limit= and ?cursor=. An explicit limit wins over the cursor's; an empty
// one is none, as an empty cursor is (a client that fills in every parameter for every page).
func pageRequest(c *gin.Context) (cursor.Request, error) {
	req := cursor.Request{Limit: DefaultLimit}
	if tok, ok := c.GetQuery("cursor"); ok && tok != "" {
		cur, err := cursor.Decode(tok, validUUID, MaxLimit)
		if err != nil {
			return req, apperr.ErrInvalidCursor
		}
		req.After, req.Limit = &cur, cur.Limit
	}
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return req, apperr.ErrValidation.WithDetails(apperr.Field("limit", "validation.range", "min", 1, "max", MaxLimit))
		}
		req.Limit = n
	}
	return req, nil
}

func validUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// query returns a trimmed query parameter, refusing filters over 200 characters (not bytes,
// SPEC §11) and text the database cannot compare (not UTF-8, or holding a NUL).
func query(c *gin.Context, name string) (string, error) {
	v := strings.TrimSpace(c.Query(name))
	if strings.ContainsRune(v, 0) {
		return "", apperr.ErrValidation.WithDetails(apperr.Field(name, "validation.nulCharacter"))
	}
	if !utf8.ValidString(v) {
		return "", apperr.ErrValidation.WithDetails(apperr.Field(name, "validation.utf8"))
	}
	if utf8.RuneCountInString(v) > 200 {
		return "", apperr.ErrValidation.WithDetails(apperr.Field(name, "validation.length", "min", 0, "max", 200))
	}
	return v, nil
}

// queryBool reads a boolean filter: absent is false, else "true" or "false" as written. The
// other spellings strconv takes (1, t, TRUE) are refused: no filter documents them.
func queryBool(c *gin.Context, name string) (bool, error) {
	v, ok := c.GetQuery(name)
	if ok && v != "true" && v != "false" {
		return false, apperr.ErrValidation.WithDetails(apperr.Field(name, "validation.type", "type", typeTerm("boolean")))
	}
	return v == "true", nil
}

// queryTime parses a time bound (nil when absent), in UTC: RFC 3339 allows offsets up to
// ±23:59 and PostgreSQL stores at most ±15:59, so the offset must not reach it. Besides RFC 3339
// (its letters in either case, §5.6) it takes what clients commonly send: a space for the T,
// an offset's "+" left unencoded (it arrives as a space), a time without an offset (UTC), and a
// date alone, which names its whole UTC day: from its start, or to its last millisecond when
// end is set (the store takes in the whole millisecond a bound names).
func queryTime(c *gin.Context, name string, end bool) (*time.Time, error) {
	v := c.Query(name)
	if v == "" {
		return nil, nil
	}
	t, ok := parseBound(v, end)
	if !ok {
		return nil, apperr.ErrValidation.WithDetails(apperr.Field(name, "validation.timestamp"))
	}
	return &t, nil
}

func parseBound(v string, end bool) (time.Time, bool) {
	v = strings.ToUpper(v)
	if i := strings.LastIndexByte(v, ' '); i > len("2006-01-02T15:04") {
		v = v[:i] + "+" + v[i+1:]
	}
	if len(v) > 10 && v[10] == ' ' { // RFC 3339 §5.6's note: a space may stand for the T
		v = v[:10] + "T" + v[11:]
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), offsetInRange(v)
	}
	if t, err := time.Parse("2006-01-02T15:04:05", v); err == nil { // a fraction is taken too
		return t, true
	}
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, false
	}
	if end {
		t = t.AddDate(0, 0, 1).Add(-time.Millisecond)
	}
	return t, true
}

// offsetInRange reports whether an RFC 3339 timestamp's offset, when it has one, is within
// ±23:59, as RFC 3339 has it; time.Parse takes hours up to 24 and minutes up to 60.
func offsetInRange(v string) bool {
	if strings.HasSuffix(v, "Z") || len(v) < 6 {
		return true
	}
	off := v[len(v)-6:] // ±hh:mm
	return off[1:3] <= "23" && off[4:6] <= "59"
}

// Context keys set by the middleware.
const (
	principalKey = "dispatch.principal"
	langKey      = "dispatch.lang"
)

func principal(c *gin.Context) auth.Principal {
	p, _ := c.Get(principalKey)
	pr, _ := p.(auth.Principal)
	return pr
}

// language is the response language: ?lang=, then Accept-Language, then the caller's saved
// language, then English.
func language(c *gin.Context) string {
	if l := c.GetString(langKey); l != "" {
		return l
	}
	if p := principal(c); p.Language != "" {
		return p.Language
	}
	return i18n.English
}
