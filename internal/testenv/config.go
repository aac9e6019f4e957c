package testenv

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/config"
)

// Config returns the configuration of service for a test: the given database and Redis URLs,
// cheap argon2 parameters, rate limits off, and overrides as name, value pairs.
func Config(t testing.TB, service config.Service, dbURL, redisURL string, overrides ...string) config.Config {
	t.Helper()
	env := map[string]string{
		"APP_ENV": "test", "DATABASE_URL": dbURL, "REDIS_URL": redisURL,
		"ARGON2_MEMORY_KIB": "64", "ARGON2_TIME": "1", "ARGON2_THREADS": "1",
		"RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "error",
	}
	for i := 0; i+1 < len(overrides); i += 2 {
		env[overrides[i]] = overrides[i+1]
	}
	cfg, err := config.Load(service, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("test config: %v", err)
	}
	return cfg
}
