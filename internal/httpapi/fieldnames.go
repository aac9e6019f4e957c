package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/dispatchhq/dispatch/internal/apperr"
)

// exactFieldNames refuses object keys that match a field only case-insensitively
// ({"EMAIL": …}): encoding/json accepts them, the API's field names are exact. It walks the
// decoded value along dst's type, so nested objects (address, items[…]) are checked too.
func exactFieldNames(raw []byte, dst any) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil // the strict decode already judged the syntax
	}
	if path, found := unknownName(v, reflect.TypeOf(dst)); found {
		return apperr.ErrValidation.WithDetails(apperr.Field(path, "validation.unknownField"))
	}
	return nil
}

// unknownName returns the path of a key in v that t has no field for. The path is built only
// for that key: a body may hold a large array of objects.
func unknownName(v any, t reflect.Type) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch val := v.(type) {
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return "", false
		}
		fields := jsonFields(t)
		for key, child := range val {
			ft, ok := fields[key]
			if !ok {
				return key, true
			}
			if p, found := unknownName(child, ft); found {
				return key + nested(p), true
			}
		}
	case []any:
		if t.Kind() != reflect.Slice {
			return "", false
		}
		for i, child := range val {
			if p, found := unknownName(child, t.Elem()); found {
				return "[" + strconv.Itoa(i) + "]" + nested(p), true
			}
		}
	}
	return "", false
}

// nested is the rest of a path after a key or an index: ".name" or "[2]".
func nested(p string) string {
	if strings.HasPrefix(p, "[") {
		return p
	}
	return "." + p
}

// fieldsOf caches jsonFields by type.
var fieldsOf sync.Map // reflect.Type → map[string]reflect.Type

// jsonFields maps the JSON names of struct type t's fields (embedded ones included) to their
// types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldsOf.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported() && !f.Anonymous:
		case f.Anonymous && name == "":
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
		case name == "":
			out[f.Name] = f.Type
		default:
			out[name] = f.Type
		}
	}
	fieldsOf.Store(t, out)
	return out
}

// maxPathDepth bounds the nesting valuePath follows. No body of the API nests past a few
// levels, and the decoder's own depth limit does not apply to its tokens: a 1 MiB body of
// brackets cost about 100 MB and named a field of megabytes.
const maxPathDepth = 32

// valuePath returns the path (items[1].quantity) of the JSON value in raw that starts or ends at
// offset, where encoding/json reports a type error, or "" when no value does (or it lies deeper
// than maxPathDepth).
func valuePath(raw []byte, offset int64) string {
	type frame struct {
		array bool
		key   string
		index int
		onKey bool // an object's next token is a key
	}
	var stack []frame
	current := func() string {
		var b strings.Builder
		for _, f := range stack {
			if f.array {
				b.WriteString("[" + strconv.Itoa(f.index) + "]")
			} else {
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			}
		}
		return b.String()
	}
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		if top := &stack[len(stack)-1]; top.array {
			top.index++
		} else {
			top.onKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].onKey {
			if key, ok := tok.(string); ok {
				stack[n-1].key, stack[n-1].onKey = key, false
				continue
			}
		}
		at := dec.InputOffset() == offset
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if at {
				return current()
			}
			if len(stack) == maxPathDepth {
				return ""
			}
			stack = append(stack, frame{array: tok == json.Delim('['), onKey: true})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			if at {
				return current()
			}
			valueDone()
		}
	}
}
