package internal_test

// The dependency rule (docs/architecture.md): the domain packages and their stores depend on
// neither transport (gin, Asynq) nor the packages that carry it (httpapi, worker, outbox/relay)
// nor the composition root, directly or through anything they import.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/dispatchhq/dispatch/"

// domain lists the packages the rule holds for.
var domain = []string{
	"internal/apperr",
	"internal/auth", "internal/auth/authdb",
	"internal/catalog", "internal/catalog/catalogdb",
	"internal/idempotency",
	"internal/notification", "internal/notification/notificationdb",
	"internal/order", "internal/order/orderdb",
	"internal/outbox",
	"internal/payment",
	"internal/tasks",
	"internal/user", "internal/user/userdb",
}

// forbidden are the import paths no domain package may reach.
var forbidden = []string{
	"github.com/gin-gonic/gin",
	"github.com/hibiken/asynq",
	module + "internal/httpapi",
	module + "internal/worker",
	module + "internal/outbox/relay",
	module + "internal/assembly",
}

func TestDomainIsFreeOfTransport(t *testing.T) {
	t.Parallel()
	graph := importGraph(t, domain)
	for _, pkg := range domain {
		for _, bad := range forbidden {
			if chain := importChain(graph, module+pkg, bad); chain != nil {
				t.Errorf("%s depends on %s: %s", pkg, bad, strings.Join(chain, " -> "))
			}
		}
	}
}

// TestTransportsBuildNoStore: the API and the worker reach the database through the services
// the composition root built (docs/architecture.md), never through a store package of their
// own import.
func TestTransportsBuildNoStore(t *testing.T) {
	t.Parallel()
	transports := []string{"internal/httpapi", "internal/worker"}
	graph := importGraph(t, transports)
	for _, pkg := range transports {
		for _, imp := range graph[module+pkg] {
			if strings.HasPrefix(imp, module+"internal/") && strings.HasSuffix(imp, "db") {
				t.Errorf("%s imports the store package %s", pkg, imp)
			}
		}
	}
}

// TestImportChainFindsIndirectImports keeps the rule's check honest: a dependency two hops
// away is found, with the path to it.
func TestImportChainFindsIndirectImports(t *testing.T) {
	t.Parallel()
	graph := map[string][]string{"a": {"b"}, "b": {"c"}, "c": nil}
	if got := strings.Join(importChain(graph, "a", "c"), " "); got != "a b c" {
		t.Fatalf("chain a to c = %q, want a b c", got)
	}
	if got := importChain(graph, "c", "a"); got != nil {
		t.Fatalf("chain c to a = %v, want none", got)
	}
}

// importGraph returns every package pkgs depend on (test files excluded) with its imports, as
// `go list -deps` reports them.
func importGraph(t *testing.T, pkgs []string) map[string][]string {
	t.Helper()
	args := []string{"list", "-deps", "-json=ImportPath,Imports"}
	for _, p := range pkgs {
		args = append(args, module+p)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	graph := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		graph[p.ImportPath] = p.Imports
	}
	for _, p := range pkgs {
		if _, ok := graph[module+p]; !ok {
			t.Fatalf("go list did not report %s", p)
		}
	}
	return graph
}

// importChain returns the shortest import path from `from` to a package that is `to` or below
// it, or nil when there is none.
func importChain(graph map[string][]string, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == to || strings.HasPrefix(p, to+"/") {
			var chain []string
			for ; p != ""; p = prev[p] {
				chain = append([]string{p}, chain...)
			}
			return chain
		}
		for _, next := range graph[p] {
			if _, seen := prev[next]; !seen {
				prev[next] = p
				queue = append(queue, next)
			}
		}
	}
	return nil
}
