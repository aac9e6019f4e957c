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
// ({"EMAIL": …}): encoding/json accepts them, the API's field names are exact. It also refuses
// a key an object repeats ({"password":"a","password":"b"}), where encoding/json keeps the last
// one silently and a proxy or firewall in front may read the first. It scans the body along
// dst's type, so nested objects (address, items[…]) are checked too.
func exactFieldNames(raw []byte, dst any) error {
	if path, code := scanKeys(raw, reflect.TypeOf(dst)); code != "" {
		return apperr.ErrValidation.WithDetails(apperr.Field(path, code))
	}
	return nil
}

// keyFrame is an object or an array scanKeys is in.
type keyFrame struct {
	array  bool
	elem   reflect.Type            // an array's element type, a map's value type (nil: any)
	fields map[string]reflect.Type // a struct's fields by JSON name (nil: any key)
	start  int                     // where the object's keys begin among the keys seen
	index  int                     // the array's current element
}

// scanKeys returns the path of the first key of raw that its object repeats or that has no
// field in the type the object is decoded into, with the code to refuse it with; "" when there
// is none. It reads the bytes once without decoding a value, as it runs on every body. A body
// it cannot follow (bad syntax, nesting past maxPathDepth) is left to the strict decode, which
// judges it.
func scanKeys(raw []byte, t reflect.Type) (path, code string) {
	stack := make([]keyFrame, 0, 4)
	keys := make([][]byte, 0, 16) // the keys of the open objects, innermost last
	next := t                     // the type of the next value
	expectKey := false            // the next string is an object's key
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '{', '[':
			if len(stack) == maxPathDepth {
				return "", ""
			}
			for next != nil && next.Kind() == reflect.Pointer {
				next = next.Elem()
			}
			f := keyFrame{array: c == '[', start: len(keys)}
			switch {
			case next == nil:
			case !f.array && next.Kind() == reflect.Struct:
				f.fields = jsonFields(next)
			case !f.array && next.Kind() == reflect.Map, f.array && (next.Kind() == reflect.Slice || next.Kind() == reflect.Array):
				f.elem = next.Elem()
			}
			stack = append(stack, f)
			next, expectKey = f.elem, !f.array
		case '}', ']':
			if len(stack) == 0 {
				return "", ""
			}
			keys = keys[:stack[len(stack)-1].start]
			stack = stack[:len(stack)-1]
		case ',':
			if len(stack) == 0 {
				return "", ""
			}
			top := &stack[len(stack)-1]
			if top.array {
				top.index++
				next = top.elem
			}
			expectKey = !top.array
		case '"':
			end := stringEnd(raw, i)
			if end < 0 {
				return "", ""
			}
			if expectKey && len(stack) > 0 {
				top := &stack[len(stack)-1]
				key := raw[i+1 : end]
				if bytes.IndexByte(key, '\\') >= 0 {
					var k string
					if json.Unmarshal(raw[i:end+1], &k) != nil {
						return "", ""
					}
					key = []byte(k)
				}
				for _, seen := range keys[top.start:] {
					if bytes.Equal(seen, key) {
						return keyPath(stack, keys, key), "validation.duplicateField"
					}
				}
				next = top.elem
				if top.fields != nil {
					if next = top.fields[string(key)]; next == nil {
						return keyPath(stack, keys, key), "validation.unknownField"
					}
				}
				keys = append(keys, key)
				expectKey = false
			}
			i = end
		}
	}
	return "", ""
}

// stringEnd returns the index of the quote that ends the JSON string starting at raw[start],
// or -1.
func stringEnd(raw []byte, start int) int {
	for i := start + 1; i < len(raw); i++ {
		switch raw[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// keyPath is the path (items[1].quantity) of key in the innermost of the open objects and
// arrays of stack, whose keys are keys.
func keyPath(stack []keyFrame, keys [][]byte, key []byte) string {
	var b strings.Builder
	for k, f := range stack[:len(stack)-1] {
		if f.array {
			b.WriteString("[" + strconv.Itoa(f.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.Write(keys[stack[k+1].start-1]) // the key whose value holds the next frame
	}
	if b.Len() > 0 {
		b.WriteByte('.')
	}
	b.Write(key)
	return b.String()
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

// maxPathDepth bounds the nesting valuePath and scanKeys follow. No body of the API nests past a few
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
