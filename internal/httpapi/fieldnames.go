package httpapi

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"

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
	return checkNames(v, reflect.TypeOf(dst), "")
}

func checkNames(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch val := v.(type) {
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return nil
		}
		fields := jsonFields(t)
		for key, child := range val {
			ft, ok := fields[key]
			if !ok {
				return apperr.ErrValidation.WithDetails(apperr.Field(join(path, key), "validation.unknownField"))
			}
			if err := checkNames(child, ft, join(path, key)); err != nil {
				return err
			}
		}
	case []any:
		if t.Kind() != reflect.Slice {
			return nil
		}
		for i, child := range val {
			if err := checkNames(child, t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonFields maps a struct's JSON names (embedded structs included) to field types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
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
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
