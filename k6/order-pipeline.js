// Order pipeline load test. Each iteration is one customer buying once, end to end:
//
//   sign up (Idempotency-Key) → log in → create an order of demo items (Idempotency-Key)
//   → pay it with a payment_intent.succeeded webhook signed here (HMAC-SHA256, hex)
//   → poll GET /v1/orders/:id until PROCESSED (bounded) → ship and deliver with staff tokens
//
// Iterations start at a constant arrival rate, so a slow pipeline shows up as latency and
// dropped iterations rather than as a lower offered load.
//
// The stack must run with RATE_LIMIT_ENABLED=false (SPEC §1 provides it for load tests): every
// iteration signs up and logs in from the same IP, past the 10/min and 5/min limits. setup()
// checks and aborts the test when the limits are on. See k6/README.md.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=2 -e DURATION=1m k6/order-pipeline.js
//
// Environment: BASE_URL, WEBHOOK_SECRET (default whsec_dispatch_local), RATE (iterations/s, 2),
// DURATION (1m), VUS (pre-allocated, 20), MAX_VUS (100), POLL_MS (50), PROCESS_TIMEOUT_MS (30000),
// FULFIL (true: ship and deliver), and the threshold bounds HTTP_P95_MS (500), HTTP_P99_MS (1000),
// WEBHOOK_P95_MS (100), PIPELINE_P95_MS (2000).
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  BASE_URL, DEMO_ITEMS, request, json, login, uuid, hex, webhookEvent, sign, sendWebhook, poll, pickLines, durationSeconds,
} from './lib.js';

const RATE = Number(__ENV.RATE || 2);
const DURATION = __ENV.DURATION || '1m';
const VUS = Number(__ENV.VUS || 20);
const MAX_VUS = Number(__ENV.MAX_VUS || 100);
const POLL_MS = Number(__ENV.POLL_MS || 50);
const PROCESS_TIMEOUT_MS = Number(__ENV.PROCESS_TIMEOUT_MS || 30000);
const FULFIL = (__ENV.FULFIL || 'true') !== 'false';

// From sending the signed webhook to the first GET that shows PROCESSED: the webhook's commit,
// the outbox relay, the order:process task and the poll (resolution POLL_MS).
const webhookToProcessed = new Trend('pipeline_webhook_to_processed', true);
// Whole iteration, sign-up to delivered (or processed when FULFIL=false).
const pipelineDuration = new Trend('pipeline_duration', true);
const ordersCompleted = new Counter('pipeline_orders_completed');
const processTimeouts = new Counter('pipeline_process_timeouts');
const pipelineErrors = new Rate('pipeline_errors');

export const options = {
  scenarios: {
    orders: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: VUS,
      maxVUs: MAX_VUS,
      gracefulStop: `${Math.ceil(PROCESS_TIMEOUT_MS / 1000) + 15}s`,
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    http_req_failed: ['rate<0.01'],
    http_req_duration: [`p(95)<${__ENV.HTTP_P95_MS || 500}`, `p(99)<${__ENV.HTTP_P99_MS || 1000}`],
    // SPEC §6: the webhook answers after its commit "in well under 100 ms".
    'http_req_duration{name:POST /stripe/webhook}': [`p(95)<${__ENV.WEBHOOK_P95_MS || 100}`],
    pipeline_webhook_to_processed: [`p(95)<${__ENV.PIPELINE_P95_MS || 2000}`],
    pipeline_errors: ['rate<0.01'],
    pipeline_process_timeouts: ['count==0'],
    pipeline_orders_completed: ['count>0'],
    // The offered rate was sustained: no iteration skipped for want of a free VU.
    dropped_iterations: ['count==0'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }));

export function setup() {
  const ready = request('GET', '/ready');
  if (ready.status !== 200) exec.test.abort(`${BASE_URL}/ready answered ${ready.status}: start the stack first (make run)`);

  // Any rate-limited route answers with X-RateLimit-* headers when the limits are on, even a 401.
  const probe = request('GET', `/v1/items/${DEMO_ITEMS[0]}`, { name: 'GET /v1/items/:id', expect: 401 });
  if (probe.headers['X-Ratelimit-Limit'] || probe.headers['X-RateLimit-Limit']) {
    exec.test.abort('the API enforces rate limits: every iteration signs up and logs in from one IP (limits 10/min and ' +
      '5/min), so start the stack with RATE_LIMIT_ENABLED=false (RATE_LIMIT_ENABLED=false make run); see k6/README.md');
  }

  const staff = {};
  if (FULFIL) {
    for (const role of ['shipper', 'delivery']) {
      const s = login(`${role}@dispatch.local`);
      if (s.res.status !== 200 || !s.token) exec.test.abort(`login of ${role}@dispatch.local failed (${s.res.status}): is the demo data seeded?`);
      staff[role] = s.token;
      const ttl = json(s.res).expiresIn;
      if (ttl && durationSeconds(DURATION) + PROCESS_TIMEOUT_MS / 1000 > ttl) {
        console.warn(`staff tokens expire after ${ttl}s, before the test ends: raise JWT_ACCESS_TTL for long runs`);
      }
    }
  }
  return { staff };
}

function step(res, name, status, more = {}) {
  const checks = { [`${name} → ${status}`]: (r) => r.status === status };
  for (const [k, f] of Object.entries(more)) checks[`${name}: ${k}`] = f;
  const ok = check(res, checks);
  if (!ok) console.error(`${name}: got ${res.status} ${String(res.body).slice(0, 300)}`);
  return ok;
}

export default function (data) {
  const started = Date.now();
  const ok = iteration(data);
  pipelineErrors.add(!ok);
  if (ok) pipelineDuration.add(Date.now() - started);
}

function iteration(data) {
  const tag = `${exec.vu.idInTest}-${exec.scenario.iterationInTest}-${hex(4)}`;
  const email = `k6-load-${tag}@example.com`;
  const password = `k6-load-${hex(6)}`;

  let res = request('POST', '/v1/users', { idem: uuid(), body: { name: `K6 Load ${tag}`, email, password } });
  if (!step(res, 'POST /v1/users', 201)) return false;

  const session = login(email, password);
  if (!step(session.res, 'POST /v1/auth/login', 200) || !session.token) return false;
  const token = session.token;

  res = request('POST', '/v1/orders', { token, idem: uuid(), body: { items: pickLines() } });
  const order = json(res);
  if (!step(res, 'POST /v1/orders', 201, {
    'PENDING with a PaymentIntent': () => order && order.status === 'PENDING' && !!order.payment.paymentIntentId,
  })) return false;

  const event = webhookEvent('payment_intent.succeeded', order);
  const sentAt = Date.now();
  res = sendWebhook(event, sign(event));
  if (!step(res, 'POST /stripe/webhook', 200, { 'applied': (r) => json(r) && json(r).outcome === 'applied' })) return false;

  const r = poll(() => json(request('GET', `/v1/orders/${order.id}`, { token, name: 'GET /v1/orders/:id' })),
    (o) => o.status !== 'PENDING' && o.status !== 'PAID', PROCESS_TIMEOUT_MS, POLL_MS);
  const processed = r.value && r.value.status === 'PROCESSED';
  if (!r.ok) processTimeouts.add(1);
  if (!check(r, { [`order PROCESSED within ${PROCESS_TIMEOUT_MS} ms`]: () => processed })) {
    console.error(`order ${order.id}: ${r.value ? r.value.status : 'unreadable'} after ${r.elapsed} ms`);
    return false;
  }
  webhookToProcessed.add(Date.now() - sentAt);

  if (FULFIL) {
    res = request('PATCH', `/v1/admin/orders/${order.id}/ship`, { token: data.staff.shipper, name: 'PATCH /v1/admin/orders/:id/ship',
      body: { trackingNumber: `K6-${tag}`, carrier: 'UPS' } });
    if (!step(res, 'PATCH /v1/admin/orders/:id/ship', 200, { 'SHIPPED': (x) => json(x) && json(x).status === 'SHIPPED' })) return false;
    res = request('PATCH', `/v1/admin/orders/${order.id}/deliver`, { token: data.staff.delivery, name: 'PATCH /v1/admin/orders/:id/deliver' });
    if (!step(res, 'PATCH /v1/admin/orders/:id/deliver', 200, { 'DELIVERED': (x) => json(x) && json(x).status === 'DELIVERED' })) return false;
  }
  ordersCompleted.add(1);
  return true;
}
