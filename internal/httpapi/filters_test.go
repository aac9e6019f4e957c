package httpapi_test

import (
	"strings"
	"testing"
)

// TestFilterLengthCountsCharacters: list filters are limited to 200 characters, not bytes
// (SPEC §11), as api/openapi.json documents (maxLength 200).
func TestFilterLengthCountsCharacters(t *testing.T) {
	a := newApp(t)
	admin := a.as("admin@dispatch.local")
	accented := strings.Repeat("%C3%A9", 200) // 200 characters, 400 bytes
	for _, path := range []string{"/v1/users?name=", "/v1/items?name=", "/v1/admin/users?email=", "/v1/admin/items?description="} {
		admin.Do("GET", path+accented, nil).Expect(t, 200)
		admin.Do("GET", path+accented+"a", nil).ExpectError(t, 400, "common.errors.validation")
	}
}
