// Package api embeds the OpenAPI 3.1 document of the HTTP API, served as is at /openapi.json.
package api

import _ "embed"

// OpenAPI is the OpenAPI 3.1 document (api/openapi.json).
//
//go:embed openapi.json
var OpenAPI []byte
