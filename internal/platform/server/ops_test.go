package server_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dispatchhq/dispatch/internal/platform/server"
)

func TestProfilesOnlyWhenEnabled(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		srv := httptest.NewServer(server.Ops(nil, nil, on))
		for path, wantOn := range map[string]int{"/debug/pprof/": 200, "/debug/pprof/heap?debug=1": 200, "/debug/pprof/goroutine?debug=1": 200} {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusNotFound
			if on {
				want = wantOn
			}
			if resp.StatusCode != want {
				t.Errorf("pprof %t: GET %s = %d, want %d", on, path, resp.StatusCode, want)
			}
		}
		srv.Close()
	}
}
