package config_test

import (
	"bytes"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/config"
)

// env returns a getenv over the given name, value pairs.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func load(t *testing.T, service config.Service, kv ...string) config.Config {
	t.Helper()
	c, err := config.Load(service, env(kv...))
	if err != nil {
		t.Fatalf("Load(%v): %v", kv, err)
	}
	return c
}

// loadErr loads a configuration that must be refused and returns the error text.
func loadErr(t *testing.T, service config.Service, kv ...string) string {
	t.Helper()
	c, err := config.Load(service, env(kv...))
	if err == nil {
		t.Fatalf("Load(%v) accepted the configuration: %+v", kv, c)
	}
	if !reflectZero(c) {
		t.Fatalf("Load(%v) returned a configuration with its error", kv)
	}
	return err.Error()
}

func reflectZero(c config.Config) bool {
	return c.Service == "" && c.DatabaseURL == "" && c.QueueWeights == nil
}

// productionSecrets are non-default secrets for APP_ENV=production.
var productionSecrets = []string{
	"APP_ENV", "production",
	"JWT_ACCESS_SECRET", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	"JWT_REFRESH_SECRET", "Vq3xT8kLm2Rz7Yp4Wn6Bd1Hs9Gf5Jc0Ea8Ku3Ot7Ni2",
	"STRIPE_SECRET_KEY", "sk_live_51Hx8sQ2eZvKYlo2C0aB3dE4fG5hI6jK7lM8nO9pQ",
	"STRIPE_WEBHOOK_SECRET", "whsec_Xk29vLp0QmZr8TbN4cYw7HdJ1sFg6EaU",
	"ADMIN_UI_PASSWORD", "tidy-otter-7-glacier-lamp",
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c := load(t, config.API)
	checks := map[string][2]any{
		"Service":            {c.Service, config.API},
		"Env":                {c.Env, "development"},
		"DatabaseURL":        {c.DatabaseURL, "postgres://postgres@127.0.0.1:5432/dispatch?sslmode=disable"},
		"RedisURL":           {c.RedisURL, "redis://127.0.0.1:6379/0"},
		"HTTPAddr":           {c.HTTPAddr, ":8080"},
		"OpsAddr":            {c.OpsAddr, ":9100"},
		"ShutdownTimeout":    {c.ShutdownTimeout, 15 * time.Second},
		"ShutdownDrain":      {c.ShutdownDrain, time.Duration(0)},
		"JWTAccessSecret":    {c.JWTAccessSecret, config.DefaultJWTAccessSecret},
		"JWTRefreshSecret":   {c.JWTRefreshSecret, config.DefaultJWTRefreshSecret},
		"JWTAccessTTL":       {c.JWTAccessTTL, 15 * time.Minute},
		"JWTRefreshTTL":      {c.JWTRefreshTTL, 7 * 24 * time.Hour},
		"Argon2":             {c.Argon2, config.Argon2{MemoryKiB: 19456, Time: 2, Threads: 1}},
		"StripeSecretKey":    {c.StripeSecretKey, "sk_test_dispatch"},
		"StripeWebhook":      {c.StripeWebhookSecret, "whsec_dispatch_local"},
		"StripeAPIBase":      {c.StripeAPIBase, "http://127.0.0.1:12111"},
		"RateLimitEnabled":   {c.RateLimitEnabled, true},
		"RateLimits":         {c.RateLimits, config.RateLimits{Login: 5, Session: 20, Create: 10, Default: 60}},
		"CacheTTL":           {c.CacheTTL, 60 * time.Second},
		"OrderUnpaidTTL":     {c.OrderUnpaidTTL, 30 * time.Minute},
		"OutboxBatchSize":    {c.OutboxBatchSize, 500},
		"OutboxPollInterval": {c.OutboxPollInterval, time.Second},
		"WorkerConcurrency":  {c.WorkerConcurrency, 20},
		"LogLevel":           {c.LogLevel, slog.LevelInfo},
		"LogFormat":          {c.LogFormat, "json"},
		"LokiURL":            {c.LokiURL, ""},
		"AdminUIUser":        {c.AdminUIUser, "admin"},
		"AdminUIPassword":    {c.AdminUIPassword, config.DefaultAdminUIPassword},
		"SeedDemoData":       {c.SeedDemoData, true},
		"Production":         {c.Production(), false},
	}
	for name, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %v, want %v", name, v[0], v[1])
		}
	}
	if !maps.Equal(c.QueueWeights, map[string]int{"orders": 6, "payments": 3, "notifications": 2, "maintenance": 1}) {
		t.Errorf("QueueWeights = %v", c.QueueWeights)
	}
	if !slices.Equal(c.CORSOrigins, []string{"http://localhost:3000", "http://127.0.0.1:3000"}) {
		t.Errorf("CORSOrigins = %v", c.CORSOrigins)
	}
	if len(c.TrustedProxies) != 0 {
		t.Errorf("trusted proxies by default: %v (no proxy is trusted unless named)", c.TrustedProxies)
	}
	// The ops port depends on the program (SPEC §10).
	for svc, want := range map[config.Service]string{config.Worker: ":9101", config.Relay: ":9102", config.API: ":9100", config.Migrate: ":9100"} {
		if got := load(t, svc).OpsAddr; got != want {
			t.Errorf("%s OpsAddr = %s, want %s", svc, got, want)
		}
	}
	// So does the database pool: the worker's follows its task slots.
	for _, p := range []struct {
		svc  config.Service
		env  []string
		want int
	}{
		{config.API, nil, 4},
		{config.Relay, nil, 4},
		{config.Migrate, nil, 4},
		{config.Worker, nil, 24},
		{config.Worker, []string{"WORKER_CONCURRENCY", "6"}, 10},
		{config.Worker, []string{"QUEUE_CONCURRENCY", "orders=8,payments=2,notifications=2,maintenance=1"}, 17},
	} {
		if got := load(t, p.svc, p.env...).DBMaxConns; got != p.want {
			t.Errorf("%s %v DBMaxConns = %d, want %d", p.svc, p.env, got, p.want)
		}
	}
}

func TestValuesAreParsed(t *testing.T) {
	t.Parallel()
	c := load(t, config.Worker,
		"APP_ENV", "test",
		"DATABASE_URL", "postgresql://u:p@db:5432/x",
		"DB_MAX_CONNS", "3",
		"REDIS_URL", "rediss://cache:6380/2",
		"HTTP_ADDR", "0.0.0.0:8000",
		"OPS_ADDR", "localhost:9999",
		"SHUTDOWN_TIMEOUT", "30",
		"SHUTDOWN_DRAIN", "5s",
		"TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7 ,",
		"CORS_ORIGINS", " https://shop.example , https://admin.example ,,",
		"JWT_ACCESS_TTL", "5m",
		"JWT_REFRESH_TTL", "48h",
		"ARGON2_MEMORY_KIB", "64", "ARGON2_TIME", "3", "ARGON2_THREADS", "4",
		"STRIPE_API_BASE", "https://stripe.internal",
		"RATE_LIMIT_ENABLED", "false",
		"RATE_LIMITS", "login=3, create = 7",
		"CACHE_TTL", "1m30s",
		"ORDER_UNPAID_TTL", "90",
		"OUTBOX_BATCH_SIZE", "10000",
		"OUTBOX_POLL_INTERVAL", "250ms",
		"WORKER_CONCURRENCY", "1",
		"QUEUE_WEIGHTS", " orders = 1 ,payments=2,notifications=3,maintenance=4 ",
		"LOG_LEVEL", "debug",
		"LOG_FORMAT", "text",
		"LOKI_URL", "http://loki:3100",
		"ADMIN_UI_USER", "ops",
		"SEED_DEMO_DATA", "false",
	)
	checks := map[string][2]any{
		"Env":                {c.Env, "test"},
		"DatabaseURL":        {c.DatabaseURL, "postgresql://u:p@db:5432/x"},
		"DBMaxConns":         {c.DBMaxConns, 3},
		"RedisURL":           {c.RedisURL, "rediss://cache:6380/2"},
		"HTTPAddr":           {c.HTTPAddr, "0.0.0.0:8000"},
		"OpsAddr":            {c.OpsAddr, "localhost:9999"},
		"ShutdownTimeout":    {c.ShutdownTimeout, 30 * time.Second},
		"ShutdownDrain":      {c.ShutdownDrain, 5 * time.Second},
		"JWTAccessTTL":       {c.JWTAccessTTL, 5 * time.Minute},
		"JWTRefreshTTL":      {c.JWTRefreshTTL, 48 * time.Hour},
		"Argon2":             {c.Argon2, config.Argon2{MemoryKiB: 64, Time: 3, Threads: 4}},
		"StripeAPIBase":      {c.StripeAPIBase, "https://stripe.internal"},
		"RateLimitEnabled":   {c.RateLimitEnabled, false},
		"RateLimits":         {c.RateLimits, config.RateLimits{Login: 3, Session: 20, Create: 7, Default: 60}},
		"CacheTTL":           {c.CacheTTL, 90 * time.Second},
		"OrderUnpaidTTL":     {c.OrderUnpaidTTL, 90 * time.Second},
		"OutboxBatchSize":    {c.OutboxBatchSize, 10000},
		"OutboxPollInterval": {c.OutboxPollInterval, 250 * time.Millisecond},
		"WorkerConcurrency":  {c.WorkerConcurrency, 1},
		"LogLevel":           {c.LogLevel, slog.LevelDebug},
		"LogFormat":          {c.LogFormat, "text"},
		"LokiURL":            {c.LokiURL, "http://loki:3100"},
		"AdminUIUser":        {c.AdminUIUser, "ops"},
		"SeedDemoData":       {c.SeedDemoData, false},
	}
	for name, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %v, want %v", name, v[0], v[1])
		}
	}
	if !maps.Equal(c.QueueWeights, map[string]int{"orders": 1, "payments": 2, "notifications": 3, "maintenance": 4}) {
		t.Errorf("QueueWeights = %v", c.QueueWeights)
	}
	if !slices.Equal(c.CORSOrigins, []string{"https://shop.example", "https://admin.example"}) {
		t.Errorf("CORSOrigins = %v", c.CORSOrigins)
	}
	if !slices.Equal(c.TrustedProxies, []string{"10.0.0.0/8", "192.0.2.7"}) {
		t.Errorf("TrustedProxies = %v", c.TrustedProxies)
	}
	for _, lvl := range []struct {
		in   string
		want slog.Level
	}{{"warn", slog.LevelWarn}, {"error", slog.LevelError}, {"INFO", slog.LevelInfo}} {
		if got := load(t, config.API, "LOG_LEVEL", lvl.in).LogLevel; got != lvl.want {
			t.Errorf("LOG_LEVEL=%s → %v", lvl.in, got)
		}
	}
	for _, b := range []struct {
		in   string
		want bool
	}{{"true", true}, {"1", true}, {"FALSE", false}, {"0", false}} {
		if got := load(t, config.API, "RATE_LIMIT_ENABLED", b.in).RateLimitEnabled; got != b.want {
			t.Errorf("RATE_LIMIT_ENABLED=%s → %v", b.in, got)
		}
	}
	for _, d := range []struct {
		in   string
		want time.Duration
	}{{"0", 0}, {"0s", 0}, {"0ms", 0}, {"10", 10 * time.Second}, {"1m", time.Minute}} {
		if got := load(t, config.API, "SHUTDOWN_DRAIN", d.in).ShutdownDrain; got != d.want {
			t.Errorf("SHUTDOWN_DRAIN=%s → %v", d.in, got)
		}
	}
	// Blank values fall back to the defaults.
	if c := load(t, config.API, "HTTP_ADDR", "   ", "CACHE_TTL", ""); c.HTTPAddr != ":8080" || c.CacheTTL != time.Minute {
		t.Errorf("blank values: %s %s", c.HTTPAddr, c.CacheTTL)
	}
}

func TestEveryBadValueIsReported(t *testing.T) {
	t.Parallel()
	bad := []struct{ name, value string }{
		{"APP_ENV", "staging"},
		{"DATABASE_URL", "mysql://root@db/x"},
		{"REDIS_URL", "not a url"},
		{"HTTP_ADDR", "8080"},
		{"OPS_ADDR", "localhost"},
		{"SHUTDOWN_TIMEOUT", "soon"},
		{"SHUTDOWN_DRAIN", "-1s"},
		{"TRUSTED_PROXIES", "10.0.0.0/8,proxy.local"},
		{"JWT_ACCESS_SECRET", "short"},
		{"JWT_REFRESH_SECRET", "also-short"},
		{"JWT_ACCESS_TTL", "0"},
		{"JWT_REFRESH_TTL", "-1h"},
		{"ARGON2_MEMORY_KIB", "4194305"},
		{"ARGON2_TIME", "0"},
		{"ARGON2_THREADS", "65"},
		{"STRIPE_API_BASE", "ftp://stripe"},
		{"RATE_LIMIT_ENABLED", "maybe"},
		{"RATE_LIMITS", "login=0"},
		{"CACHE_TTL", "-5s"},
		{"ORDER_UNPAID_TTL", "forever"},
		{"OUTBOX_BATCH_SIZE", "10001"},
		{"OUTBOX_POLL_INTERVAL", "1 second"},
		{"WORKER_CONCURRENCY", "0"},
		{"DB_MAX_CONNS", "0"},
		{"QUEUE_WEIGHTS", "orders=1"},
		{"LOG_LEVEL", "loud"},
		{"LOG_FORMAT", "xml"},
		{"LOKI_URL", "loki:3100"},
		{"SEED_DEMO_DATA", "yes please"},
	}
	// Each alone is refused, naming the variable and the value.
	for _, b := range bad {
		msg := loadErr(t, config.API, b.name, b.value)
		if !strings.Contains(msg, b.name+":") {
			t.Errorf("%s=%q: error does not name the variable:\n%s", b.name, b.value, msg)
		}
	}
	// All at once: one error lists every one of them.
	var kv []string
	for _, b := range bad {
		kv = append(kv, b.name, b.value)
	}
	msg := loadErr(t, config.API, kv...)
	for _, b := range bad {
		if !strings.Contains(msg, b.name+":") {
			t.Errorf("the combined error omits %s:\n%s", b.name, msg)
		}
	}
	if !strings.HasPrefix(msg, "invalid configuration") {
		t.Errorf("error does not say what failed: %s", msg)
	}
	// The offending values are quoted so the operator sees them.
	for _, v := range []string{`"staging"`, `"loud"`, `"xml"`, `"10001"`, `"proxy.local"`} {
		if !strings.Contains(msg, v) {
			t.Errorf("the error does not quote %s:\n%s", v, msg)
		}
	}
}

// TestDurationsStayInTheirRange: a count of seconds too large for a duration once wrapped to a
// negative or tiny one and was taken (an unpaid TTL of -292 years canceled every PENDING order);
// each duration now has a range, and a value out of it is refused like any bad value.
func TestDurationsStayInTheirRange(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"SHUTDOWN_TIMEOUT", "SHUTDOWN_DRAIN", "JWT_ACCESS_TTL", "JWT_REFRESH_TTL", "CACHE_TTL",
		"ORDER_UNPAID_TTL", "OUTBOX_POLL_INTERVAL", "OUTBOX_REDELIVER_AFTER"} {
		for _, v := range []string{"9223372037", "18446744074", "-9223372037", "2562047h", "-1", "-1ms", "87601h"} {
			if msg := loadErr(t, config.API, name, v); !strings.Contains(msg, name+":") || !strings.Contains(msg, "..") {
				t.Errorf("%s=%s: %s", name, v, msg)
			}
		}
	}
	// Just past a bound: a token shorter than its second, a poll of microseconds, a cache entry
	// kept past a day.
	for name, v := range map[string]string{"JWT_ACCESS_TTL": "999ms", "OUTBOX_POLL_INTERVAL": "999us", "CACHE_TTL": "24h1s", "ORDER_UNPAID_TTL": "0"} {
		if msg := loadErr(t, config.API, name, v); !strings.Contains(msg, name+":") {
			t.Errorf("%s=%s: %s", name, v, msg)
		}
	}
	// Short values stay for tests, and the bounds themselves are values, in either spelling.
	for _, ok := range []struct {
		name, value string
		want        time.Duration
	}{
		{"ORDER_UNPAID_TTL", "1", time.Second}, {"ORDER_UNPAID_TTL", "720h", 720 * time.Hour},
		{"OUTBOX_POLL_INTERVAL", "1ms", time.Millisecond}, {"CACHE_TTL", "86400", 24 * time.Hour},
		{"SHUTDOWN_TIMEOUT", "500ms", 500 * time.Millisecond}, {"JWT_REFRESH_TTL", "87600h", 87600 * time.Hour},
		{"JWT_ACCESS_TTL", "2s", 2 * time.Second},
	} {
		c := load(t, config.API, ok.name, ok.value)
		got := map[string]time.Duration{"ORDER_UNPAID_TTL": c.OrderUnpaidTTL, "OUTBOX_POLL_INTERVAL": c.OutboxPollInterval,
			"CACHE_TTL": c.CacheTTL, "SHUTDOWN_TIMEOUT": c.ShutdownTimeout, "JWT_REFRESH_TTL": c.JWTRefreshTTL,
			"JWT_ACCESS_TTL": c.JWTAccessTTL}[ok.name]
		if got != ok.want {
			t.Errorf("%s=%s → %v, want %v", ok.name, ok.value, got, ok.want)
		}
	}
}

func TestCrossFieldChecks(t *testing.T) {
	t.Parallel()
	same := strings.Repeat("s", 40)
	if msg := loadErr(t, config.API, "JWT_ACCESS_SECRET", same, "JWT_REFRESH_SECRET", same); !strings.Contains(msg, "must differ") {
		t.Errorf("equal JWT secrets: %s", msg)
	}
	if msg := loadErr(t, config.API, "ARGON2_MEMORY_KIB", "8", "ARGON2_THREADS", "2"); !strings.Contains(msg, "ARGON2_MEMORY_KIB") {
		t.Errorf("argon2 memory below 8×threads: %s", msg)
	}
	load(t, config.API, "ARGON2_MEMORY_KIB", "16", "ARGON2_THREADS", "2")
	load(t, config.API, "JWT_ACCESS_SECRET", strings.Repeat("x", 32))
}

func TestQueueWeightsAndRateLimits(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"orders=6,payments=3,notifications=2",                          // missing a queue
		"orders=6,payments=3,notifications=2,maintenance=1,critical=9", // unknown queue
		"orders=0,payments=3,notifications=2,maintenance=1",
		"orders=-1,payments=3,notifications=2,maintenance=1",
		"orders=x,payments=3,notifications=2,maintenance=1",
		"orders,payments=3,notifications=2,maintenance=1",
		"orders=1.5,payments=3,notifications=2,maintenance=1",
	} {
		if msg := loadErr(t, config.Worker, "QUEUE_WEIGHTS", bad); !strings.Contains(msg, "QUEUE_WEIGHTS") {
			t.Errorf("QUEUE_WEIGHTS=%q: %s", bad, msg)
		}
	}
	for _, bad := range []string{"critical=2", "orders=0", "orders=x", "notifications=10001"} {
		if msg := loadErr(t, config.Worker, "QUEUE_CONCURRENCY", bad); !strings.Contains(msg, "QUEUE_CONCURRENCY") {
			t.Errorf("QUEUE_CONCURRENCY=%q: %s", bad, msg)
		}
	}
	w := load(t, config.Worker)
	if len(w.QueueConcurrency) != 0 || w.WorkerSlots() != 20 {
		t.Errorf("by default every queue shares the 20 slots: %v, %d slots", w.QueueConcurrency, w.WorkerSlots())
	}
	w = load(t, config.Worker, "QUEUE_CONCURRENCY", "orders=8, notifications=4")
	if !maps.Equal(w.QueueConcurrency, map[string]int{"orders": 8, "notifications": 4}) || w.WorkerSlots() != 32 {
		t.Errorf("QueueConcurrency = %v, %d slots; want orders 8, notifications 4 and 32 slots", w.QueueConcurrency, w.WorkerSlots())
	}
	w = load(t, config.Worker, "QUEUE_CONCURRENCY", "orders=8,payments=2,notifications=4,maintenance=1")
	if w.WorkerSlots() != 15 {
		t.Errorf("every queue with slots of its own: %d slots, want 15 (none shared)", w.WorkerSlots())
	}
	for _, bad := range []string{"burst=5", "login=0", "login=-2", "login=five", "login", "create=1,session=x"} {
		if msg := loadErr(t, config.API, "RATE_LIMITS", bad); !strings.Contains(msg, "RATE_LIMITS") {
			t.Errorf("RATE_LIMITS=%q: %s", bad, msg)
		}
	}
	c := load(t, config.API, "RATE_LIMITS", "login=1,session=2,create=3,default=4")
	if c.RateLimits != (config.RateLimits{Login: 1, Session: 2, Create: 3, Default: 4}) {
		t.Errorf("RateLimits = %+v", c.RateLimits)
	}
	c = load(t, config.API, "RATE_LIMITS", "default=1000")
	if c.RateLimits != (config.RateLimits{Login: 5, Session: 20, Create: 10, Default: 1000}) {
		t.Errorf("a partial RATE_LIMITS must keep the other defaults: %+v", c.RateLimits)
	}
}

func TestProductionSafeguards(t *testing.T) {
	t.Parallel()
	// Production without secrets: every default secret of the API is refused.
	msg := loadErr(t, config.API, "APP_ENV", "production")
	for _, name := range []string{"JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "ADMIN_UI_PASSWORD"} {
		if !strings.Contains(msg, name+": must be set") {
			t.Errorf("production accepted the default %s:\n%s", name, msg)
		}
	}
	// Spelling the defaults out does not help.
	msg = loadErr(t, config.API, "APP_ENV", "production",
		"JWT_ACCESS_SECRET", config.DefaultJWTAccessSecret, "JWT_REFRESH_SECRET", config.DefaultJWTRefreshSecret,
		"STRIPE_SECRET_KEY", config.DefaultStripeSecretKey, "STRIPE_WEBHOOK_SECRET", config.DefaultStripeWebhookSecret,
		"ADMIN_UI_PASSWORD", config.DefaultAdminUIPassword)
	for _, name := range []string{"JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "ADMIN_UI_PASSWORD"} {
		if !strings.Contains(msg, name+": must be set") {
			t.Errorf("production accepted an explicit default %s:\n%s", name, msg)
		}
	}

	// With real secrets production loads, never seeds by default, and talks to live Stripe.
	c := load(t, config.API, productionSecrets...)
	if !c.Production() || c.SeedDemoData || c.StripeAPIBase != "" {
		t.Fatalf("production config: production %v seed %v stripe %q", c.Production(), c.SeedDemoData, c.StripeAPIBase)
	}
	// Demo data is never seeded in production, even when asked.
	msg = loadErr(t, config.API, append(slices.Clone(productionSecrets), "SEED_DEMO_DATA", "true")...)
	if !strings.Contains(msg, "SEED_DEMO_DATA") {
		t.Errorf("production accepted SEED_DEMO_DATA=true: %s", msg)
	}
	load(t, config.API, append(slices.Clone(productionSecrets), "SEED_DEMO_DATA", "false")...)

	// Each program needs only the secrets it uses.
	msg = loadErr(t, config.Worker, "APP_ENV", "production")
	if !strings.Contains(msg, "STRIPE_SECRET_KEY") || strings.Contains(msg, "JWT_ACCESS_SECRET") || strings.Contains(msg, "ADMIN_UI_PASSWORD") {
		t.Errorf("worker in production: %s", msg)
	}
	load(t, config.Worker, "APP_ENV", "production", "STRIPE_SECRET_KEY", "sk_live_51Hx8sQ2eZvKYlo2C0aB3dE4fG5hI6jK7lM8nO9pQ")
	load(t, config.Relay, "APP_ENV", "production")
	load(t, config.Migrate, "APP_ENV", "production")
	// Outside production the defaults are fine.
	for _, e := range []string{"development", "test"} {
		if c := load(t, config.API, "APP_ENV", e); !c.SeedDemoData || c.Production() {
			t.Errorf("APP_ENV=%s: seed %v production %v", e, c.SeedDemoData, c.Production())
		}
	}
}

// TestProductionRefusesWeakValues: secrets that are not the defaults but are guessable, a
// weak queue UI password and a Stripe stand-in are refused in production, each by name.
func TestProductionRefusesWeakValues(t *testing.T) {
	t.Parallel()
	with := func(kv ...string) string {
		return loadErr(t, config.API, append(slices.Clone(productionSecrets), kv...)...)
	}
	for name, values := range map[string][]string{
		"JWT_ACCESS_SECRET":     {strings.Repeat("a", 32), strings.Repeat("ab", 20), "0123456789012345678901234567890123456789"},
		"JWT_REFRESH_SECRET":    {strings.Repeat("r", 40), strings.Repeat("abcd", 10)},
		"STRIPE_WEBHOOK_SECRET": {"whsec_realsecret", "whsec_" + strings.Repeat("x", 32)},
		"STRIPE_SECRET_KEY":     {"sk_live_x", "sk_live_" + strings.Repeat("1", 30)},
		"ADMIN_UI_PASSWORD":     {"short-pw", "aaaaaaaaaaaaaaaa", "my-password-is-long", "Dispatch2026!!", "admin-admin-admin", "0123456789abcdef"},
	} {
		for _, v := range values {
			if msg := with(name, v); !strings.Contains(msg, name+":") {
				t.Errorf("production accepted %s=%q:\n%s", name, v, msg)
			}
		}
	}
	if msg := with("ADMIN_UI_USER", "operator", "ADMIN_UI_PASSWORD", "operator-glacier-lamp-7"); !strings.Contains(msg, "user name") {
		t.Errorf("a UI password holding the user name: %s", msg)
	}
	// A Stripe stand-in is refused where Stripe is called.
	for _, svc := range []config.Service{config.API, config.Worker} {
		msg := loadErr(t, svc, append(slices.Clone(productionSecrets), "STRIPE_API_BASE", "http://stripe-mock:12111")...)
		if !strings.Contains(msg, "STRIPE_API_BASE:") {
			t.Errorf("%s in production accepted a Stripe base URL: %s", svc, msg)
		}
	}
	// Strong values pass, outside production nothing is screened.
	load(t, config.API, append(slices.Clone(productionSecrets), "ADMIN_UI_PASSWORD", "correct horse battery staple")...)
	load(t, config.API, "JWT_ACCESS_SECRET", strings.Repeat("a", 32), "ADMIN_UI_PASSWORD", "x")
}

// TestPprofIsOptInAndLoopbackOnlyInProduction: profiles are off by default; production allows
// them only on an ops port bound to a loopback address.
func TestPprofIsOptInAndLoopbackOnlyInProduction(t *testing.T) {
	t.Parallel()
	if load(t, config.Worker).PprofEnabled {
		t.Fatal("pprof on by default")
	}
	if !load(t, config.Worker, "PPROF_ENABLED", "true").PprofEnabled {
		t.Fatal("PPROF_ENABLED=true not read")
	}
	prod := func(kv ...string) []string { return append(slices.Clone(productionSecrets), kv...) }
	for _, addr := range []string{":9101", "0.0.0.0:9101", "10.0.0.5:9101"} {
		if msg := loadErr(t, config.Worker, prod("PPROF_ENABLED", "true", "OPS_ADDR", addr)...); !strings.Contains(msg, "PPROF_ENABLED:") {
			t.Errorf("production pprof on %s: %s", addr, msg)
		}
	}
	for _, addr := range []string{"127.0.0.1:9101", "localhost:9101", "[::1]:9101"} {
		load(t, config.Worker, prod("PPROF_ENABLED", "true", "OPS_ADDR", addr)...)
	}
}

// CORS origins are compared with the browser's Origin header as sent: a spelling that can never
// match (a trailing slash, a path, capitals, no scheme) is refused at start-up, not left to fail
// every browser call.
func TestCORSOriginsAreOrigins(t *testing.T) {
	t.Parallel()
	for _, good := range []string{"https://shop.example", "http://localhost:3000", "http://127.0.0.1:3000", "http://[::1]:8080",
		"https://shop.example,https://admin.shop.example", "*"} {
		load(t, config.API, "CORS_ORIGINS", good)
	}
	for _, bad := range []string{"https://shop.example/", "https://Shop.example", "shop.example", "https://shop.example/app",
		"https://shop.example?x=1", "ftp://shop.example", "https://user@shop.example", "https://", "HTTPS://shop.example",
		"https://shop.example#", "https://shop.example?"} {
		if msg := loadErr(t, config.API, "CORS_ORIGINS", bad); !strings.Contains(msg, "CORS_ORIGINS:") {
			t.Errorf("CORS_ORIGINS=%s: %s", bad, msg)
		}
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	if w := load(t, config.API).Warnings; len(w) != 0 {
		t.Errorf("warnings for the defaults: %v", w)
	}
	w := load(t, config.API, "CORS_ORIGINS", "https://shop.example,*").Warnings
	if len(w) != 1 || !strings.Contains(w[0], "CORS_ORIGINS=*") {
		t.Errorf("CORS_ORIGINS=* warnings: %v", w)
	}
	for _, all := range []string{"0.0.0.0/0", "::/0", "10.0.0.0/8,0.0.0.0/0"} {
		w := load(t, config.API, "TRUSTED_PROXIES", all).Warnings
		if len(w) != 1 || !strings.Contains(w[0], "trusts every address") {
			t.Errorf("TRUSTED_PROXIES=%s warnings: %v", all, w)
		}
	}
	for _, some := range []string{"10.0.0.0/8", "10.0.0.7", "::1", "fd00::/8", "0.0.0.0/1"} {
		if w := load(t, config.API, "TRUSTED_PROXIES", some).Warnings; len(w) != 0 {
			t.Errorf("TRUSTED_PROXIES=%s warnings: %v", some, w)
		}
	}
}

func TestLoadReadsExactlyVars(t *testing.T) {
	t.Parallel()
	read := map[string]bool{}
	if _, err := config.Load(config.API, func(k string) string { read[k] = true; return "" }); err != nil {
		t.Fatal(err)
	}
	prodRead := map[string]bool{}
	_, _ = config.Load(config.API, func(k string) string {
		prodRead[k] = true
		if k == "APP_ENV" {
			return "production"
		}
		return ""
	})
	maps.Copy(read, prodRead)
	vars := config.Vars()
	for _, v := range vars {
		if !read[v] {
			t.Errorf("Vars lists %s but Load never reads it", v)
		}
	}
	for k := range read {
		if !slices.Contains(vars, k) {
			t.Errorf("Load reads %s, which Vars does not list", k)
		}
	}
	// Every variable SPEC §10 names is among them.
	for _, v := range []string{
		"DATABASE_URL", "REDIS_URL", "HTTP_ADDR", "OPS_ADDR", "JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET",
		"JWT_ACCESS_TTL", "JWT_REFRESH_TTL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE",
		"RATE_LIMIT_ENABLED", "CACHE_TTL", "ORDER_UNPAID_TTL", "OUTBOX_BATCH_SIZE", "OUTBOX_POLL_INTERVAL",
		"WORKER_CONCURRENCY", "QUEUE_WEIGHTS", "LOG_LEVEL", "LOG_FORMAT", "LOKI_URL", "ADMIN_UI_USER",
		"ADMIN_UI_PASSWORD", "SEED_DEMO_DATA", "CORS_ORIGINS", "ARGON2_MEMORY_KIB", "ARGON2_TIME", "ARGON2_THREADS",
	} {
		if !slices.Contains(vars, v) {
			t.Errorf("SPEC §10 variable %s is not configurable", v)
		}
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Parallel()
	c := load(t, config.API,
		"DATABASE_URL", "postgres://app:db-pass-123@db:5432/dispatch",
		"REDIS_URL", "redis://:redis-pass-456@cache:6379/0",
		"JWT_ACCESS_SECRET", "access-secret-0123456789-0123456789",
		"JWT_REFRESH_SECRET", "refresh-secret-0123456789-0123456789",
		"STRIPE_SECRET_KEY", "sk_test_secret789",
		"STRIPE_WEBHOOK_SECRET", "whsec_secret000",
		"ADMIN_UI_PASSWORD", "ui-pass-111",
	)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	out := buf.String()
	for _, secret := range []string{"db-pass-123", "redis-pass-456", "access-secret", "refresh-secret", "sk_test_secret789", "whsec_secret000", "ui-pass-111"} {
		if strings.Contains(out, secret) {
			t.Errorf("the configuration log line leaks %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"db:5432", "app", "cache:6379", `"env":"development"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the configuration log line lacks %q:\n%s", want, out)
		}
	}
}

// TestURLPasswordsStayOutOfLogsAndErrors: lib/pq takes a password as a query parameter too, and
// a URL that does not parse (a password's "@" left unescaped) is refused without being echoed.
func TestURLPasswordsStayOutOfLogsAndErrors(t *testing.T) {
	t.Parallel()
	c := load(t, config.API, "DATABASE_URL", "postgres://app@db:5432/dispatch?sslmode=require&password=query-pass-1&sslpassword=key-pass-2")
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	for _, secret := range []string{"query-pass-1", "key-pass-2"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("the configuration log line leaks %q:\n%s", secret, buf.String())
		}
	}
	if !strings.Contains(buf.String(), "sslmode=require") {
		t.Errorf("the other parameters are lost:\n%s", buf.String())
	}
	for _, name := range []string{"DATABASE_URL", "LOKI_URL", "STRIPE_API_BASE"} {
		msg := loadErr(t, config.API, name, "https://user:p@ss%word@host:1/x")
		if !strings.Contains(msg, name+":") || strings.Contains(msg, "ss%word") {
			t.Errorf("%s: %s", name, msg)
		}
	}
	// Redis URLs in every form the parser refuses: a bad escape, no scheme, a Sentinel URL.
	for _, v := range []string{"redis://:s3cr%zzet@cache:6379/0", "rediss://app:s3cr%zzet@cache:6379", "app:s3cr%zzet@cache:6379",
		"redis-sentinel://:s3cr%zzet@s1:26379/0?master=m", "redis-sentinel://:s3cr%zzet@s1:26379/0", "redis://:s3cr%zzet@cache:6379/x"} {
		msg := loadErr(t, config.API, "REDIS_URL", v)
		if !strings.Contains(msg, "REDIS_URL:") || strings.Contains(msg, "s3cr") || strings.Contains(msg, "zzet") {
			t.Errorf("REDIS_URL=%s: %s", v, msg)
		}
	}
	// The Stripe base URL is logged without a password it carries.
	c = load(t, config.API, "STRIPE_API_BASE", "https://proxy:stripe-pass-3@stripe.internal:8443")
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	if strings.Contains(buf.String(), "stripe-pass-3") || !strings.Contains(buf.String(), "stripe.internal:8443") {
		t.Errorf("the configuration log line shows the Stripe base's password or hides its host:\n%s", buf.String())
	}
}

func TestRedisURLTakesASentinelConfiguration(t *testing.T) {
	t.Parallel()
	good := "redis-sentinel://:redis-pass-456@s1:26379,s2:26379,s3:26379/1?master=dispatch&sentinel_password=sentinel-pass-789"
	c := load(t, config.API, "REDIS_URL", good)
	if c.RedisURL != good {
		t.Fatalf("RedisURL = %q", c.RedisURL)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	if out := buf.String(); strings.Contains(out, "redis-pass-456") || strings.Contains(out, "sentinel-pass-789") ||
		!strings.Contains(out, "s1:26379,s2:26379,s3:26379") {
		t.Errorf("the configuration log line shows a password or hides the sentinels:\n%s", out)
	}
	// A Sentinel URL without its master name, or with a bad address, is refused with the reason.
	for value, reason := range map[string]string{
		"redis-sentinel://:pw-1@s1:26379,s2:26379/0":   "?master=",
		"redis-sentinel://s1:26379,s2:x/0?master=m":    "no valid port",
		"redis-sentinel://s1,s2/0?master=m&masterr=m2": `unknown parameter "masterr"`,
	} {
		msg := loadErr(t, config.API, "REDIS_URL", value)
		if !strings.Contains(msg, "REDIS_URL:") || !strings.Contains(msg, reason) || strings.Contains(msg, "pw-1") {
			t.Errorf("REDIS_URL=%s: error %q, want one naming REDIS_URL and %q without the password", value, msg, reason)
		}
	}
}
