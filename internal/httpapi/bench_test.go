package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// BenchmarkCachedItemRead measures GET /v1/items/:id served from the cache, in process, with
// the access log (JSON lines written to a real file) and the request metrics on ("observed")
// and off ("unobserved"). cpu-ns/op is the process's CPU time per request, the cost the
// observability adds; compare the two with benchstat.
func BenchmarkCachedItemRead(b *testing.B) {
	for _, tc := range []struct {
		name       string
		unobserved bool
	}{{"observed", false}, {"unobserved", true}} {
		b.Run(tc.name, func(b *testing.B) {
			h, token := benchAPI(b, tc.unobserved)
			path := "/v1/items/" + demo.Items()[0].ID.String()
			read := func() {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			read() // warm the cache and the identity cache
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := testenv.ProcessCPU()
			for i := 0; i < b.N; i++ {
				read()
			}
			testenv.ReportCPU(b, cpu0)
		})
	}
}

func benchAPI(b *testing.B, unobserved bool) (http.Handler, string) {
	db, dbURL := testenv.DB(b)
	rdb, keys, redisURL := testenv.Redis(b)
	cfg := testenv.Config(b, config.API, dbURL, redisURL, "LOG_LEVEL", "info")
	logFile, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { logFile.Close() })
	// The logger the programs build, writing to a file instead of stdout.
	log, closeLog, err := logging.Setup("api", cfg.LogLevel, cfg.LogFormat, "", logFile, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(closeLog)
	services := assembly.New(cfg, assembly.Infra{DB: db, Redis: rdb, Keys: keys, Log: log,
		Gateway: payment.NewStripe(cfg.StripeSecretKey, "http://127.0.0.1:1")})
	srv := httpapi.New(cfg, services, httpapi.Options{Unobserved: unobserved})
	b.Cleanup(srv.Close)
	if err := demo.Seed(testenv.Context(b), db, services.Users, services.Catalog, logging.New("seed", cfg.LogLevel, "json", io.Discard)); err != nil {
		b.Fatal(err)
	}
	body := `{"email":"admin@dispatch.local","password":"` + demo.Password + `"}`
	req := httptest.NewRequest(http.MethodPost, "/v1/auth/login", strings.NewReader(body))
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	var pair struct{ AccessToken string }
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &pair) != nil {
		b.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	return srv.Handler(), pair.AccessToken
}

// BenchmarkDecodeLargestOrderBody decodes the costliest body a client can send within 1 MiB:
// an order of ~350,000 empty lines (refused after decoding: 50 lines at most). Its cost per
// request is what a client can make the API spend for one small rate-limited request.
func BenchmarkDecodeLargestOrderBody(b *testing.B) {
	n := (1<<20 - len(`{"items":[]}`)) / 3
	raw := []byte(`{"items":[` + strings.Repeat(`{},`, n-1) + `{}]}`)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for range b.N {
		var in order.CreateInput
		if err := httpapi.DecodeJSON(raw, &in, false); err != nil {
			b.Fatal(err)
		}
	}
}
