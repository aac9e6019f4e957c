// Package deploycheck_test checks the deployment files against the code they deploy:
// docker-compose.yml (compose-go, and `docker compose config` where the CLI plugin exists),
// the Dockerfile (its build command is run for real), deploy/prometheus, deploy/loki and
// deploy/grafana. The dashboard's queries are checked against the metrics that the real
// programs — the binaries the Dockerfile builds — expose after orders went through them.
//
// `make test` starts no container here. Two tests run the real thing when asked:
// TestComposeStack builds the image and runs the compose app services on a Docker engine
// (built with the compose tag, make compose-check); TestObservability runs Prometheus and Loki against the
// programs (built with the observability tag, make observability-check).
package deploycheck_test

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"go.yaml.in/yaml/v3"
)

// root is the repository root (two levels above this file).
var root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// path returns the absolute path of a file of the repository.
func path(rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }

// readFile returns a file of the repository.
func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(path(rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readYAML decodes a YAML file of the repository into v, refusing unknown duplicate keys.
func readYAML(t testing.TB, rel string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, rel), v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}
