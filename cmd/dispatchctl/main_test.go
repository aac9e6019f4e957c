package main

import "testing"

func TestAPIURL(t *testing.T) {
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080",
		"127.0.0.1:8080": "http://127.0.0.1:8080",
		"[::1]:9000":     "http://[::1]:9000",
	} {
		if got := apiURL(addr); got != want {
			t.Errorf("apiURL(%q) = %q, want %q", addr, got, want)
		}
	}
}
