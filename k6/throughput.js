// Closed-loop throughput: the kind of run issue 11's targets are stated in. setup() signs up and
// logs in CUSTOMERS customers; then VUS virtual users each send their next request as soon as
// the last one answered, for DURATION:
//
//   SCENARIO=orders    POST /v1/orders of 1–3 random demo items, 1–3 units each, fresh Idempotency-Key
//   SCENARIO=pipeline  the same order, then its signed payment_intent.succeeded webhook, then
//                      GET /v1/orders/:id every POLL_MS until PROCESSED
//
//   k6 run -e VUS=8 -e SCENARIO=orders k6/throughput.js
//
// The stack must run with RATE_LIMIT_ENABLED=false (SPEC §1): one IP sends everything. Every
// order takes stock: the demo items start with 10,000,000 units each, enough for about 15
// million such orders; should they run out, orders are refused with 409 (insufficient stock),
// and the run stops and says so. See k6/README.md.
//
// Environment: BASE_URL, WEBHOOK_SECRET, SCENARIO (orders), VUS (8), DURATION (30s), CUSTOMERS
// (50), POLL_MS (10), PROCESS_TIMEOUT_MS (30000).
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import {
  DEMO_ITEMS, request, json, login, uuid, hex, webhookEvent, sign, sendWebhook, poll, pickLines, durationSeconds,
} from './lib.js';

const SCENARIO = __ENV.SCENARIO || 'orders';
const CUSTOMERS = Number(__ENV.CUSTOMERS || 50);
const POLL_MS = Number(__ENV.POLL_MS || 10);
const PROCESS_TIMEOUT_MS = Number(__ENV.PROCESS_TIMEOUT_MS || 30000);
if (!['orders', 'pipeline'].includes(SCENARIO)) throw new Error(`SCENARIO must be orders or pipeline, not ${SCENARIO}`);

const VUS = Number(__ENV.VUS || 8);
const DURATION = __ENV.DURATION || '30s';
const ordersCreated = new Counter('orders_created');
const ordersProcessed = new Counter('orders_processed');
const orderCreate = new Trend('order_create', true);
const webhook = new Trend('webhook', true);
const webhookToProcessed = new Trend('pipeline_webhook_to_processed', true);

export const options = {
  scenarios: {
    [SCENARIO]: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
      gracefulStop: '10s',
    },
  },
  setupTimeout: '5m',
  thresholds: {
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
    orders_created: ['count>0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  const probe = request('GET', `/v1/items/${DEMO_ITEMS[0]}`, { name: 'GET /v1/items/:id', expect: [200, 401] });
  if (probe.headers['X-Ratelimit-Limit'] || probe.headers['X-RateLimit-Limit']) {
    exec.test.abort('the API enforces rate limits: start the stack with RATE_LIMIT_ENABLED=false (see k6/README.md)');
  }
  const tokens = [];
  for (let i = 0; i < CUSTOMERS; i++) {
    const email = `k6-throughput-${hex(6)}@example.com`;
    const password = `k6-${hex(8)}`;
    const res = request('POST', '/v1/users', { idem: uuid(), body: { name: `K6 Throughput ${i}`, email, password } });
    if (res.status !== 201) exec.test.abort(`sign-up answered ${res.status}: ${String(res.body).slice(0, 200)}`);
    const s = login(email, password);
    if (!s.token) exec.test.abort(`login answered ${s.res.status}`);
    tokens.push(s.token);
  }
  return { tokens };
}

export default function (data) {
  const token = data.tokens[(exec.vu.idInTest + exec.vu.iterationInScenario) % data.tokens.length];
  const res = request('POST', '/v1/orders', { token, idem: uuid(), body: { items: pickLines() } });
  const order = json(res);
  if (res.status === 409 && String(res.body).includes('insufficientStock')) {
    exec.test.abort('the demo items are out of stock: restart the stack on a fresh database (see k6/README.md)');
  }
  if (!check(res, { 'POST /v1/orders → 201': (r) => r.status === 201 })) return;
  ordersCreated.add(1);
  orderCreate.add(res.timings.duration);
  if (SCENARIO !== 'pipeline') return;

  const event = webhookEvent('payment_intent.succeeded', order);
  const sentAt = Date.now();
  const hook = sendWebhook(event, sign(event));
  if (!check(hook, { 'POST /stripe/webhook → 200': (r) => r.status === 200 })) return;
  webhook.add(hook.timings.duration);
  const r = poll(() => json(request('GET', `/v1/orders/${order.id}`, { token, name: 'GET /v1/orders/:id' })),
    (o) => o.status !== 'PENDING' && o.status !== 'PAID', PROCESS_TIMEOUT_MS, POLL_MS);
  if (check(r, { 'order PROCESSED': () => r.value && r.value.status === 'PROCESSED' })) {
    webhookToProcessed.add(Date.now() - sentAt);
    ordersProcessed.add(1);
  }
}

// The rates k6 prints count setup (the customers' password hashes) in the run's time; this
// summary divides by DURATION, the time the VUs ran.
export function handleSummary(data) {
  const m = data.metrics;
  const seconds = durationSeconds(DURATION);
  const count = (name) => (m[name] ? m[name].values.count : 0);
  const ms = (name) => (m[name] ? ['med', 'p(90)', 'p(99)'].map((k) => m[name].values[k].toFixed(1)).join(' / ') : '-');
  const lines = [
    `throughput.js: ${SCENARIO}, ${VUS} VUs, ${DURATION}`,
    `  orders created     ${count('orders_created')} (${(count('orders_created') / seconds).toFixed(1)}/s); POST /v1/orders p50 / p90 / p99 ms: ${ms('order_create')}`,
  ];
  if (SCENARIO === 'pipeline') {
    lines.push(`  orders PROCESSED   ${count('orders_processed')} (${(count('orders_processed') / seconds).toFixed(1)}/s); webhook p50 / p90 / p99 ms: ${ms('webhook')}`);
    lines.push(`  webhook → PROCESSED p50 / p90 / p99 ms (poll every ${POLL_MS} ms): ${ms('pipeline_webhook_to_processed')}`);
  }
  const checks = m.checks ? m.checks.values : { passes: 0, fails: 0 };
  lines.push(`  checks passed ${checks.passes}, failed ${checks.fails}; failed requests ${m.http_req_failed ? m.http_req_failed.values.passes : 0} of ${count('http_reqs')}`);
  return { stdout: lines.join('\n') + '\n' };
}
