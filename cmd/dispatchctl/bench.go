package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/loadtest"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

const benchUsage = `usage: dispatchctl bench <scenario> [flags]
scenarios (against a running stack with RATE_LIMIT_ENABLED=false):
  item-hit, item-miss, list-hit, list-miss   GET /v1/items/:id or /v1/items, cache hit or forced miss
  login                                      POST /v1/auth/login
  orders                                     POST /v1/orders, closed loop (-clients) or open loop (-rate)
  pipeline                                   order + signed webhook at -rate/s; webhook → PROCESSED latency
  relay                                      -rows outbox rows; time for the running relay to drain them
  reconcile                                  seeds -orders PENDING orders, times bounded reconciler runs until
                                             they checked them all (in-process; -stripe-delay slows Stripe)`

func bench(ctx context.Context, db *postgres.DB, cfg config.Config, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(benchUsage)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	base := fs.String("api", apiURL(cfg.HTTPAddr), "base URL of the API")
	clients := fs.Int("clients", 32, "concurrent clients (closed loop)")
	rate := fs.Float64("rate", 0, "requests per second (open loop; 0 = closed loop)")
	duration := fs.Duration("duration", 20*time.Second, "length of the run")
	warmup := fs.Duration("warmup", 3*time.Second, "unmeasured run before the measured one")
	customers := fs.Int("customers", 16, "customers created for the run")
	items := fs.Int("items", 50, "items created for the run; orders take some of them at random")
	lines := fs.Int("lines", 2, "order i has i%lines+1 lines, distinct items")
	units := fs.Int("units", 1, "units per line, 1 to this at random")
	rows := fs.Int("rows", 100000, "outbox rows (relay)")
	orders := fs.Int("orders", 10000, "PENDING orders (reconcile)")
	self, _ := os.Executable()
	programs := fs.String("programs", filepath.Dir(self), "directory of the running api, outbox-relay and worker (CPU per process)")
	stripeDelay := fs.Duration("stripe-delay", 0, "added to every Stripe call (reconcile)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	scenario := args[0]
	switch scenario {
	case "relay":
		return benchRelay(ctx, db, *rows, out)
	case "reconcile":
		return benchReconcile(ctx, db, cfg, *orders, *stripeDelay, out)
	}

	rdb, err := redisx.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	s := &loadtest.Stack{Base: *base, DB: db, Redis: rdb, Keys: redisx.DefaultPrefix,
		WebhookSecret: cfg.StripeWebhookSecret, HTTP: loadtest.Client(max(*clients, 64)), Lines: *lines, Units: *units}
	if err := s.Prepare(ctx, *customers, *items); err != nil {
		return fmt.Errorf("prepare (are rate limits off?): %w", err)
	}
	meter, err := loadtest.FindProcesses(ctx, db, rdb, *programs)
	if err != nil {
		fmt.Fprintf(out, "no CPU per process: %v\n", err)
		meter = &loadtest.CPUMeter{}
	}
	stmts, pool := loadtest.NewStatementMeter(ctx, db), loadtest.NewPoolMeter(ctx, s.HTTP, *base)
	if scenario == "pipeline" {
		if *rate == 0 {
			return errors.New("pipeline needs -rate")
		}
		if *warmup > 0 {
			_, _ = s.Pipeline(ctx, *rate, *warmup)
		}
		before, stmts0, pool0 := meter.Sample(), stmts.Sample(ctx), pool.Sample(ctx)
		res, err := s.Pipeline(ctx, *rate, *duration)
		const unit = "paid and processed order"
		n := len(res.Latencies)
		fmt.Fprint(out, res, meter.Report(before, meter.Sample(), n, unit),
			stmts.Report(stmts0, stmts.Sample(ctx), n, unit), pool.Report(pool0, pool.Sample(ctx), n, unit))
		return err
	}
	var (
		req loadtest.Request
		ok  loadtest.OK
	)
	switch scenario {
	case "item-hit", "item-miss", "list-hit", "list-miss":
		req, ok = s.ItemRead(scenario[:4] == "list", scenario[len(scenario)-4:] == "miss")
	case "login":
		req, ok = s.Login()
	case "orders":
		req, ok = s.CreateOrder()
	default:
		return errors.New(benchUsage)
	}
	run := func(d time.Duration) loadtest.Result {
		name := fmt.Sprintf("%s, %d clients", scenario, *clients)
		if *rate > 0 {
			return loadtest.Open(ctx, fmt.Sprintf("%s at %.0f/s", scenario, *rate), s.HTTP, *rate, d, req, ok)
		}
		return loadtest.Closed(ctx, name, s.HTTP, *clients, d, req, ok)
	}
	if *warmup > 0 {
		run(*warmup)
	}
	cpu0, cpuErr := s.ServerCPU(ctx)
	before, stmts0, pool0 := meter.Sample(), stmts.Sample(ctx), pool.Sample(ctx)
	res := run(*duration)
	after, stmts1, pool1 := meter.Sample(), stmts.Sample(ctx), pool.Sample(ctx)
	if cpu1, err := s.ServerCPU(ctx); err == nil && cpuErr == nil {
		res.ServerCPU = cpu1 - cpu0
	}
	served := res.Requests - res.Errors
	fmt.Fprint(out, res, meter.Report(before, after, served, "request"), stmts.Report(stmts0, stmts1, served, "request"),
		pool.Report(pool0, pool1, served, "request"))
	return nil
}

func benchRelay(ctx context.Context, db *postgres.DB, rows int, out io.Writer) error {
	userID, err := loadtest.DemoAdmin(ctx, db)
	if err != nil {
		return err
	}
	d, err := loadtest.RelayDrain(ctx, db, rows, userID)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "relay drained %d rows in %s: %.0f rows/s\n", rows, d.Round(time.Millisecond), float64(rows)/d.Seconds())
	return nil
}

func benchReconcile(ctx context.Context, db *postgres.DB, cfg config.Config, n int, stripeDelay time.Duration, out io.Writer) error {
	userID, err := loadtest.DemoAdmin(ctx, db)
	if err != nil {
		return err
	}
	item, err := loadtest.DemoItem(ctx, db)
	if err != nil {
		return err
	}
	policy := order.DefaultReconcilePolicy(cfg.OrderUnpaidTTL)
	// Old enough to be looked up at Stripe, young enough not to be canceled: every order costs a
	// Stripe call and nothing else changes, so the run can be repeated on the same orders.
	if err := loadtest.SeedPending(ctx, db, userID, item.ID, item.Price, n, policy.IntentAge+time.Minute); err != nil {
		return err
	}
	rdb, err := redisx.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	stripeBase := cfg.StripeAPIBase
	if stripeDelay > 0 {
		if stripeBase == "" {
			return errors.New("-stripe-delay needs STRIPE_API_BASE (a stripe-mock), never the real Stripe")
		}
		if stripeBase, err = loadtest.SlowProxy(ctx, stripeBase, stripeDelay); err != nil {
			return err
		}
	}
	a := assembly.New(cfg, assembly.Infra{DB: db, Redis: rdb, Keys: redisx.DefaultPrefix, Log: logging.Discard(),
		Gateway: payment.NewStripe(cfg.StripeSecretKey, stripeBase)})
	var (
		from    *order.PendingOrder
		checked int
		total   time.Duration
	)
	for run := 1; ; run++ {
		rep, d, err := loadtest.Reconcile(ctx, a.Orders, policy, from)
		if err != nil {
			return err
		}
		checked += rep.Checked
		total += d
		fmt.Fprintf(out, "run %d: checked %d PENDING orders in %s (%.0f orders/s), finished=%t\n", run, rep.Checked,
			d.Round(time.Millisecond), float64(rep.Checked)/d.Seconds(), rep.Next == nil)
		if from = rep.Next; from == nil {
			break
		}
	}
	fmt.Fprintf(out, "reconciler checked %d orders in %s of runs (%.0f orders/s), Stripe delay %s, at most %d orders or %s per run, %d lookups at a time\n",
		checked, total.Round(time.Millisecond), float64(checked)/total.Seconds(), stripeDelay, policy.MaxOrders, policy.Budget, policy.Lookups)
	return nil
}
