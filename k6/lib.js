// Helpers shared by the Dispatch k6 scripts: configuration, JSON requests, Idempotency-Keys,
// Stripe webhook signing and bounded polling.
import http from 'k6/http';
import crypto from 'k6/crypto';
import { sleep } from 'k6';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const WEBHOOK_SECRET = __ENV.WEBHOOK_SECRET || __ENV.STRIPE_WEBHOOK_SECRET || 'whsec_dispatch_local';
// The Stripe API version stripe-go v79 pins; events of other versions are recorded but not acted on.
export const STRIPE_API_VERSION = __ENV.STRIPE_API_VERSION || '2024-06-20';
export const DEMO_PASSWORD = __ENV.DEMO_PASSWORD || 'admin12345';

// The demo catalog seeded by internal/demo (fixed ids, large stock, all in usd).
export const DEMO_ITEMS = [
  '0193a000-0000-7000-8000-000000000001',
  '0193a000-0000-7000-8000-000000000002',
  '0193a000-0000-7000-8000-000000000003',
  '0193a000-0000-7000-8000-000000000004',
  '0193a000-0000-7000-8000-000000000005',
  '0193a000-0000-7000-8000-000000000006',
];

export function hex(n) {
  const bytes = new Uint8Array(crypto.randomBytes(n));
  let s = '';
  for (const b of bytes) s += (b < 16 ? '0' : '') + b.toString(16);
  return s;
}

// A random UUIDv4, used as Idempotency-Key.
export function uuid() {
  const h = hex(16).split('');
  h[12] = '4';
  h[16] = '89ab'[parseInt(h[16], 16) & 3];
  const s = h.join('');
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

// request sends a JSON request. opts: token, body (object or raw string), headers, name (the
// metric tag grouping URLs with ids), expect (status codes that are not failures, default 2xx/3xx),
// idem (an Idempotency-Key; true makes a new one), tags.
export function request(method, path, opts = {}) {
  const headers = Object.assign({ Accept: 'application/json' }, opts.headers || {});
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (opts.idem) headers['Idempotency-Key'] = opts.idem === true ? uuid() : opts.idem;
  let body = null;
  if (opts.body !== undefined && opts.body !== null) {
    body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    headers['Content-Type'] = 'application/json';
  }
  const params = { headers, tags: Object.assign({ name: opts.name || `${method} ${path.split('?')[0]}` }, opts.tags || {}) };
  if (opts.expect) params.responseCallback = http.expectedStatuses(...[].concat(opts.expect));
  if (opts.timeout) params.timeout = opts.timeout;
  return http.request(method, BASE_URL + path, body, params);
}

export function json(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

export function login(email, password = DEMO_PASSWORD) {
  const res = request('POST', '/v1/auth/login', { body: { email, password } });
  const b = json(res);
  return { res, token: b && b.accessToken, refresh: b && b.refreshToken, userId: b && b.userId };
}

// webhookEvent renders a Stripe payment_intent.* event the way internal/payment TestEvent.Build
// does, for the order's PaymentIntent.
export function webhookEvent(type, order, extra = {}) {
  const status = { 'payment_intent.succeeded': 'succeeded', 'payment_intent.payment_failed': 'requires_payment_method',
    'payment_intent.canceled': 'canceled' }[type];
  return JSON.stringify({
    id: extra.id || `evt_k6_${hex(12)}`,
    object: 'event',
    type,
    api_version: STRIPE_API_VERSION,
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    pending_webhooks: 1,
    data: {
      object: {
        id: order.payment.paymentIntentId,
        object: 'payment_intent',
        amount: order.total,
        amount_received: type === 'payment_intent.succeeded' ? order.total : 0,
        currency: order.currency,
        status,
        metadata: { order_id: order.id },
      },
    },
  });
}

// sign computes the Stripe-Signature header: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
export function sign(body, secret = WEBHOOK_SECRET, at = Math.floor(Date.now() / 1000)) {
  return `t=${at},v1=${crypto.hmac('sha256', secret, `${at}.${body}`, 'hex')}`;
}

export function sendWebhook(body, signature, opts = {}) {
  return request('POST', '/stripe/webhook', Object.assign({ body, headers: { 'Stripe-Signature': signature } }, opts));
}

// poll calls fetch() every intervalMs until done(result) holds or timeoutMs passes. It returns
// the last result, whether it finished, and the milliseconds it took.
export function poll(fetch, done, timeoutMs, intervalMs) {
  const start = Date.now();
  for (;;) {
    const r = fetch();
    if (r !== null && r !== undefined && done(r)) return { value: r, ok: true, elapsed: Date.now() - start };
    if (Date.now() - start >= timeoutMs) return { value: r, ok: false, elapsed: Date.now() - start };
    sleep(intervalMs / 1000);
  }
}

// pickLines returns an order's lines: 1–3 distinct demo items, 1–3 units each.
export function pickLines() {
  const n = 1 + Math.floor(Math.random() * 3);
  const ids = DEMO_ITEMS.slice().sort(() => Math.random() - 0.5).slice(0, n);
  return ids.map((itemId) => ({ itemId, quantity: 1 + Math.floor(Math.random() * 3) }));
}

// durationSeconds reads a k6 duration ('1m30s', '500ms') as seconds.
export function durationSeconds(d) {
  let total = 0;
  for (const [, n, unit] of String(d).matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(n) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit];
  }
  return total;
}
