// Package config parses the environment into one typed Config, validated once at start-up.
//
// Every variable has a default that works for a local run; APP_ENV=production refuses the
// default secrets and never seeds demo data. Packages never read the environment themselves:
// programs call Load and pass the values they need down.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// Service names the program loading the configuration; it picks the ops port default.
type Service string

// The programs of the module.
const (
	API     Service = "api"
	Worker  Service = "worker"
	Relay   Service = "outbox-relay"
	Migrate Service = "migrate"
)

// Local defaults for secrets. Production refuses every one of them.
const (
	DefaultJWTAccessSecret     = "dev-access-secret-change-me-0123456789"
	DefaultJWTRefreshSecret    = "dev-refresh-secret-change-me-0123456789"
	DefaultStripeSecretKey     = "sk_test_dispatch"
	DefaultStripeWebhookSecret = "whsec_dispatch_local"
	DefaultAdminUIPassword     = "dispatch"
)

// Config is the whole configuration of every program. Each program uses the part it needs.
type Config struct {
	Service Service
	Env     string // development | test | production

	DatabaseURL string
	// DBMaxConns is the most connections the program opens to PostgreSQL.
	DBMaxConns int
	RedisURL   string

	HTTPAddr        string
	OpsAddr         string
	PprofEnabled    bool // /debug/pprof on the ops port
	ShutdownTimeout time.Duration
	// ShutdownDrain is how long the API keeps serving after SIGTERM, /ready answering 503, before
	// it stops accepting: the time a load balancer takes to stop sending it requests. 0: none.
	ShutdownDrain  time.Duration
	TrustedProxies []string
	CORSOrigins    []string

	JWTAccessSecret  string
	JWTRefreshSecret string
	JWTAccessTTL     time.Duration
	JWTRefreshTTL    time.Duration

	Argon2 Argon2

	StripeSecretKey     string
	StripeWebhookSecret string
	StripeAPIBase       string // empty means live Stripe

	RateLimitEnabled bool
	RateLimits       RateLimits
	CacheTTL         time.Duration

	OrderUnpaidTTL     time.Duration
	OutboxBatchSize    int
	OutboxPollInterval time.Duration
	// OutboxRedeliverAfter is how long a handed-off outbox row waits for its task to finish
	// before the relay hands it off again (doubling each time, up to 16×).
	OutboxRedeliverAfter time.Duration
	WorkerConcurrency    int
	QueueWeights         map[string]int
	// QueueConcurrency gives the queues named in it Asynq servers of their own with that many
	// slots; the others share WorkerConcurrency by QueueWeights. Empty: all share.
	QueueConcurrency map[string]int

	LogLevel  slog.Level
	LogFormat string // json | text
	LokiURL   string

	AdminUIUser     string
	AdminUIPassword string

	SeedDemoData bool

	// Warnings are settings that are allowed but risky; programs log them at start.
	Warnings []string
}

// Argon2 holds the argon2id cost parameters.
type Argon2 struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// RateLimits are requests per minute per client IP and route, by route class.
type RateLimits struct {
	Login   int // POST /v1/auth/login
	Session int // refresh and logout
	Create  int // the creating POSTs that require an Idempotency-Key
	Default int // every other limited route
}

// Production reports whether the program runs with production safeguards.
func (c Config) Production() bool { return c.Env == "production" }

// Vars lists every environment variable Load reads, for documentation and deployment checks.
func Vars() []string {
	return []string{
		"APP_ENV", "DATABASE_URL", "DB_MAX_CONNS", "REDIS_URL", "HTTP_ADDR", "OPS_ADDR", "PPROF_ENABLED", "SHUTDOWN_TIMEOUT",
		"SHUTDOWN_DRAIN", "TRUSTED_PROXIES", "CORS_ORIGINS", "JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET",
		"JWT_ACCESS_TTL", "JWT_REFRESH_TTL", "ARGON2_MEMORY_KIB", "ARGON2_TIME", "ARGON2_THREADS",
		"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "RATE_LIMIT_ENABLED",
		"RATE_LIMITS", "CACHE_TTL", "ORDER_UNPAID_TTL", "OUTBOX_BATCH_SIZE", "OUTBOX_POLL_INTERVAL", "OUTBOX_REDELIVER_AFTER",
		"WORKER_CONCURRENCY", "QUEUE_WEIGHTS", "QUEUE_CONCURRENCY", "LOG_LEVEL", "LOG_FORMAT", "LOKI_URL",
		"ADMIN_UI_USER", "ADMIN_UI_PASSWORD", "SEED_DEMO_DATA",
	}
}

// Load reads the configuration of service from getenv (os.Getenv in programs, a map in tests).
// It reports every bad value at once.
func Load(service Service, getenv func(string) string) (Config, error) {
	p := parser{getenv: getenv}
	c := Config{Service: service}

	c.Env = p.oneOf("APP_ENV", "development", "development", "test", "production")
	prod := c.Env == "production"

	c.DatabaseURL = p.url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatch?sslmode=disable", "postgres", "postgresql")
	c.RedisURL = p.redisURL("REDIS_URL", "redis://127.0.0.1:6379/0")

	c.HTTPAddr = p.addr("HTTP_ADDR", ":8080")
	opsDefault := map[Service]string{Worker: ":9101", Relay: ":9102"}[service]
	if opsDefault == "" {
		opsDefault = ":9100"
	}
	c.OpsAddr = p.addr("OPS_ADDR", opsDefault)
	c.PprofEnabled = p.boolean("PPROF_ENABLED", false)
	c.ShutdownTimeout = p.duration("SHUTDOWN_TIMEOUT", 15*time.Second, time.Millisecond, 24*time.Hour)
	c.ShutdownDrain = p.durationOrZero("SHUTDOWN_DRAIN", 0, 24*time.Hour)
	// No proxy is trusted unless named: a client that could reach the API from a trusted address
	// would otherwise pick its own IP (and rate-limit budget) with X-Forwarded-For.
	c.TrustedProxies = p.list("TRUSTED_PROXIES", "")
	for _, cidr := range c.TrustedProxies {
		_, network, err := net.ParseCIDR(cidr)
		switch {
		case err != nil && net.ParseIP(cidr) == nil:
			p.fail("TRUSTED_PROXIES", "%q is neither an IP nor a CIDR", cidr)
		case err == nil && slices.Equal(network.Mask, make(net.IPMask, len(network.Mask))): // a /0
			c.Warnings = append(c.Warnings, "TRUSTED_PROXIES="+cidr+" trusts every address: any client picks its own IP, and rate-limit budget, with X-Forwarded-For; name the proxies")
		}
	}
	c.CORSOrigins = p.list("CORS_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000")
	for _, o := range c.CORSOrigins {
		if o != "*" && !isOrigin(o) {
			// Compared as the browser sends it: any other spelling would never match, and every
			// call from that origin would fail in the browser while the API looked fine.
			p.fail("CORS_ORIGINS", "%q is not an origin as browsers send it (scheme://host[:port], lower case, no path)", o)
		}
	}
	if slices.Contains(c.CORSOrigins, "*") {
		c.Warnings = append(c.Warnings, "CORS_ORIGINS=* lets every web origin call the API from its users' browsers; name the origins")
	}

	c.JWTAccessSecret = p.str("JWT_ACCESS_SECRET", DefaultJWTAccessSecret)
	c.JWTRefreshSecret = p.str("JWT_REFRESH_SECRET", DefaultJWTRefreshSecret)
	c.JWTAccessTTL = p.duration("JWT_ACCESS_TTL", 15*time.Minute, time.Second, 30*24*time.Hour)
	c.JWTRefreshTTL = p.duration("JWT_REFRESH_TTL", 7*24*time.Hour, time.Second, 10*365*24*time.Hour)
	if len(c.JWTAccessSecret) < 32 {
		p.fail("JWT_ACCESS_SECRET", "must be at least 32 bytes")
	}
	if len(c.JWTRefreshSecret) < 32 {
		p.fail("JWT_REFRESH_SECRET", "must be at least 32 bytes")
	}
	if c.JWTAccessSecret == c.JWTRefreshSecret {
		p.fail("JWT_REFRESH_SECRET", "must differ from JWT_ACCESS_SECRET")
	}

	c.Argon2 = Argon2{
		MemoryKiB: uint32(p.intRange("ARGON2_MEMORY_KIB", 19456, 8, 4<<20)),
		Time:      uint32(p.intRange("ARGON2_TIME", 2, 1, 100)),
		Threads:   uint8(p.intRange("ARGON2_THREADS", 1, 1, 64)),
	}
	if c.Argon2.MemoryKiB < 8*uint32(c.Argon2.Threads) {
		p.fail("ARGON2_MEMORY_KIB", "must be at least 8 × ARGON2_THREADS")
	}

	c.StripeSecretKey = p.str("STRIPE_SECRET_KEY", DefaultStripeSecretKey)
	c.StripeWebhookSecret = p.str("STRIPE_WEBHOOK_SECRET", DefaultStripeWebhookSecret)
	stripeBase := "http://127.0.0.1:12111"
	if prod {
		stripeBase = ""
	}
	if c.StripeAPIBase = p.str("STRIPE_API_BASE", stripeBase); c.StripeAPIBase != "" {
		p.checkURL("STRIPE_API_BASE", c.StripeAPIBase, "http", "https")
	}

	c.RateLimitEnabled = p.boolean("RATE_LIMIT_ENABLED", true)
	c.RateLimits = p.rateLimits("RATE_LIMITS", RateLimits{Login: 5, Session: 20, Create: 10, Default: 60})
	// At most a day: a longer-lived copy of the catalog in Redis is not a cache any more.
	c.CacheTTL = p.duration("CACHE_TTL", 60*time.Second, time.Millisecond, 24*time.Hour)

	c.OrderUnpaidTTL = p.duration("ORDER_UNPAID_TTL", 30*time.Minute, time.Second, 365*24*time.Hour)
	c.OutboxBatchSize = p.intRange("OUTBOX_BATCH_SIZE", 500, 1, 10000)
	c.OutboxPollInterval = p.duration("OUTBOX_POLL_INTERVAL", time.Second, time.Millisecond, time.Hour)
	c.OutboxRedeliverAfter = p.duration("OUTBOX_REDELIVER_AFTER", time.Minute, time.Millisecond, 24*time.Hour)
	c.WorkerConcurrency = p.intRange("WORKER_CONCURRENCY", 20, 1, 10000)
	c.QueueWeights = p.weights("QUEUE_WEIGHTS", "orders=6,payments=3,notifications=2,maintenance=1")
	c.QueueConcurrency = p.queues("QUEUE_CONCURRENCY", p.pairs("QUEUE_CONCURRENCY", ""))
	for q, n := range c.QueueConcurrency {
		if n > 10000 {
			p.fail("QUEUE_CONCURRENCY", "%s=%d is over 10000", q, n)
		}
	}

	c.DBMaxConns = p.intRange("DB_MAX_CONNS", c.defaultDBMaxConns(), 1, 10000)

	c.LogLevel = p.level("LOG_LEVEL", slog.LevelInfo)
	c.LogFormat = p.oneOf("LOG_FORMAT", "json", "json", "text")
	if c.LokiURL = p.str("LOKI_URL", ""); c.LokiURL != "" {
		p.checkURL("LOKI_URL", c.LokiURL, "http", "https")
	}

	c.AdminUIUser = p.str("ADMIN_UI_USER", "admin")
	adminDefault := DefaultAdminUIPassword
	if prod {
		adminDefault = ""
	}
	c.AdminUIPassword = p.str("ADMIN_UI_PASSWORD", adminDefault)

	c.SeedDemoData = p.boolean("SEED_DEMO_DATA", !prod)

	if prod {
		p.production(c)
	}

	if len(p.errs) > 0 {
		return Config{}, fmt.Errorf("invalid configuration:\n  %w", errors.Join(p.errs...))
	}
	return c, nil
}

// production refuses what a production deployment must not run with: default or guessable
// secrets, a Stripe stand-in, demo data. Each refusal names its variable.
func (p *parser) production(c Config) {
	for _, s := range []struct {
		name, def string
		users     []Service
		random    bool // a random secret, not a password
	}{
		{"JWT_ACCESS_SECRET", DefaultJWTAccessSecret, []Service{API}, true},
		{"JWT_REFRESH_SECRET", DefaultJWTRefreshSecret, []Service{API}, true},
		{"STRIPE_WEBHOOK_SECRET", DefaultStripeWebhookSecret, []Service{API}, true},
		{"ADMIN_UI_PASSWORD", DefaultAdminUIPassword, []Service{API}, false},
		{"STRIPE_SECRET_KEY", DefaultStripeSecretKey, []Service{API, Worker}, true},
	} {
		v := strings.TrimSpace(p.getenv(s.name))
		switch {
		case !slices.Contains(s.users, c.Service):
		case v == "" || v == s.def:
			p.fail(s.name, "must be set to a non-default secret in production")
		case s.random && secretBits(v) < minSecretBits:
			p.fail(s.name, "looks guessable (about %.0f bits; at least %d expected): use a random value, e.g. openssl rand -hex 32", secretBits(v), minSecretBits)
		case !s.random:
			if why := weakPassword(v, c.AdminUIUser); why != "" {
				p.fail(s.name, "%s", why)
			}
		}
	}
	if c.StripeAPIBase != "" && slices.Contains([]Service{API, Worker}, c.Service) {
		p.fail("STRIPE_API_BASE", "must be empty in production (live Stripe), not %q", c.StripeAPIBase)
	}
	if c.SeedDemoData {
		p.fail("SEED_DEMO_DATA", "demo data is never seeded in production")
	}
	if c.PprofEnabled && !loopback(c.OpsAddr) {
		p.fail("PPROF_ENABLED", "profiles expose memory contents: in production only with OPS_ADDR on a loopback address, not %q", c.OpsAddr)
	}
}

// loopback reports whether addr (host:port) listens on a loopback address only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LogValue renders the configuration for the start-up log line with secrets masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("env", c.Env),
		slog.String("databaseUrl", maskURL(c.DatabaseURL)),
		slog.Int("dbMaxConns", c.DBMaxConns),
		slog.String("redisUrl", redisx.Redact(c.RedisURL)),
		slog.String("httpAddr", c.HTTPAddr),
		slog.String("opsAddr", c.OpsAddr),
		slog.Bool("pprofEnabled", c.PprofEnabled),
		slog.String("stripeApiBase", maskURL(c.StripeAPIBase)),
		slog.Bool("rateLimitEnabled", c.RateLimitEnabled),
		slog.String("cacheTtl", c.CacheTTL.String()),
		slog.Int("outboxBatchSize", c.OutboxBatchSize),
		slog.String("outboxPollInterval", c.OutboxPollInterval.String()),
		slog.String("outboxRedeliverAfter", c.OutboxRedeliverAfter.String()),
		slog.Int("workerConcurrency", c.WorkerConcurrency),
		slog.Any("queueWeights", c.QueueWeights),
		slog.Any("queueConcurrency", c.QueueConcurrency),
		slog.Bool("lokiEnabled", c.LokiURL != ""),
		slog.Bool("seedDemoData", c.SeedDemoData),
		slog.Any("argon2", c.Argon2),
	)
}

// isOrigin reports whether o is a web origin spelled as a browser's Origin header spells it.
func isOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Scheme+"://"+u.Host == o && o == strings.ToLower(o)
}

// maskURL hides a URL's passwords: the userinfo's, and those lib/pq takes as query parameters.
func maskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(not a URL)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

type parser struct {
	getenv func(string) string
	errs   []error
}

func (p *parser) fail(name, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

func (p *parser) str(name, def string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

func (p *parser) list(name, def string) []string {
	var out []string
	for _, s := range strings.Split(p.str(name, def), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (p *parser) oneOf(name, def string, allowed ...string) string {
	v := p.str(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(name, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

func (p *parser) url(name, def string, schemes ...string) string {
	return p.checkURL(name, p.str(name, def), schemes...)
}

func (p *parser) checkURL(name, v string, schemes ...string) string {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		// Not quoted: a URL that does not parse may hold a password (an unescaped "@" in it).
		p.fail(name, "is not a URL with a host (a password's reserved characters must be percent-encoded)")
		return v
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return v
		}
	}
	p.fail(name, "scheme %q is not one of %s", u.Scheme, strings.Join(schemes, ", "))
	return v
}

// redisURL accepts the forms redisx.Parse does: redis://, rediss:// and redis-sentinel://.
func (p *parser) redisURL(name, def string) string {
	v := p.str(name, def)
	_, err := redisx.Parse(v)
	var unparsed *url.Error
	switch {
	case err == nil:
	case !strings.Contains(v, "://"): // nothing to tell a password from: quote none of it
		p.fail(name, "is not a redis://, rediss:// or %s:// URL", redisx.SentinelScheme)
	case errors.As(err, &unparsed): // its message quotes the URL as given
		p.fail(name, "is not a URL with a host (a password's reserved characters must be percent-encoded)")
	default:
		why := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "redis: parse url: "), v, redisx.Redact(v))
		p.fail(name, "%q: %s", redisx.Redact(v), why)
	}
	return v
}

func (p *parser) addr(name, def string) string {
	v := p.str(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		p.fail(name, "%q is not a host:port address", v)
	}
	return v
}

// duration accepts Go durations ("90s", "15m") and plain seconds ("90") within lo..hi. The
// bounds refuse what cannot work (zero, negative, a count of seconds that overflowed) and leave
// short values to tests.
func (p *parser) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.ParseInt(v, 10, 64); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
		if n < 0 || n > int64(hi/time.Second) { // checked before the product could overflow
			err = strconv.ErrRange
		}
	}
	if err != nil || d < lo || d > hi {
		p.fail(name, "%q is not a duration in %s..%s", v, lo, hi)
		return def
	}
	return d
}

// durationOrZero is duration where 0 (off) is a value too.
func (p *parser) durationOrZero(name string, def, hi time.Duration) time.Duration {
	if d, err := time.ParseDuration(p.str(name, "")); err == nil && d == 0 {
		return 0
	}
	return p.duration(name, def, time.Nanosecond, hi)
}

func (p *parser) intRange(name string, def, lo, hi int) int {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, "%q is not an integer in %d..%d", v, lo, hi)
		return def
	}
	return n
}

func (p *parser) boolean(name string, def bool) bool {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, "%q is not a boolean", v)
		return def
	}
	return b
}

func (p *parser) level(name string, def slog.Level) slog.Level {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		p.fail(name, "%q is not one of debug, info, warn, error", v)
		return def
	}
	return l
}

// pairs parses "a=1,b=2" into positive integers keyed by name.
func (p *parser) pairs(name, def string) map[string]int {
	out := map[string]int{}
	for _, kv := range p.list(name, def) {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if !ok || err != nil || n < 1 {
			p.fail(name, "%q is not name=positive-integer", kv)
			continue
		}
		out[strings.TrimSpace(k)] = n
	}
	return out
}

// queueNames are the worker's queues (SPEC §5).
var queueNames = []string{"orders", "payments", "notifications", "maintenance"}

func (p *parser) weights(name, def string) map[string]int {
	w := p.queues(name, p.pairs(name, def))
	for _, q := range queueNames {
		if _, ok := w[q]; !ok {
			p.fail(name, "missing a weight for queue %q", q)
		}
	}
	return w
}

// queues refuses names in m that are not queues.
func (p *parser) queues(name string, m map[string]int) map[string]int {
	for q := range m {
		if !slices.Contains(queueNames, q) {
			p.fail(name, "unknown queue %q", q)
		}
	}
	return m
}

// defaultDBMaxConns is the pool a program opens unless DB_MAX_CONNS says otherwise. The API's
// is small on purpose, twice the cores of the PostgreSQL it was measured on: a statement waiting
// in the pool's line costs nothing, while one more inside PostgreSQL queues there on CPU and on
// the row locks of the items everyone orders, and makes every statement slower
// (docs/performance.md, eleventh and sixteenth passes). The worker's covers its task slots with
// four to spare; the relay claims in batches.
func (c Config) defaultDBMaxConns() int {
	switch c.Service {
	case API:
		return 4
	case Worker:
		return c.WorkerSlots() + 4
	default:
		return 4
	}
}

// WorkerSlots is how many tasks a worker runs at once: the shared slots, unless every queue
// has its own, plus each queue's own.
func (c Config) WorkerSlots() int {
	n := 0
	for _, k := range c.QueueConcurrency {
		n += k
	}
	if len(c.QueueConcurrency) < len(c.QueueWeights) {
		n += c.WorkerConcurrency
	}
	return n
}

func (p *parser) rateLimits(name string, def RateLimits) RateLimits {
	out := def
	for k, n := range p.pairs(name, "") {
		switch k {
		case "login":
			out.Login = n
		case "session":
			out.Session = n
		case "create":
			out.Create = n
		case "default":
			out.Default = n
		default:
			p.fail(name, "unknown class %q (login, session, create, default)", k)
		}
	}
	return out
}
