// Smoke test: every route of the Dispatch API once, with the status code asserted by a check.
//
// One VU, one iteration. It works against a fresh `make run` with the rate limits ON: it logs
// in twice (the admin and a fresh customer; login allows 5/min per IP), creates four orders,
// two users and one item (creating routes allow 10/min), and waits on the unlimited list routes
// (GET /v1/orders/me, GET /v1/notifications) instead of the limited GET /v1/orders/:id. With the
// limits on, run it at most twice a minute from one IP.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 k6/smoke.js
//
// Expected 4xx answers (403, 404, 409, …) are declared per request with http.expectedStatuses,
// so http_req_failed counts only the unexpected ones and its threshold is 0.
import http from 'k6/http';
import { check, group, fail } from 'k6';
import encoding from 'k6/encoding';
import {
  BASE_URL, DEMO_ITEMS, request, json, login, uuid, hex, webhookEvent, sign, sendWebhook, poll,
} from './lib.js';

const WAIT_MS = Number(__ENV.WAIT_MS || 30000); // bound on each asynchronous step
const ADMIN_UI_USER = __ENV.ADMIN_UI_USER || 'admin';
const ADMIN_UI_PASSWORD = __ENV.ADMIN_UI_PASSWORD || 'dispatch';

export const options = {
  vus: 1,
  iterations: 1,
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    http_req_duration: ['p(95)<500', 'p(99)<1000'],
    // SPEC §6: the webhook answers after its commit "in well under 100 ms".
    'http_req_duration{name:POST /stripe/webhook}': ['p(95)<100'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }));

// is records one check named "<what> → <status>" and logs the body when it fails.
function is(res, status, what, more = {}) {
  const checks = { [`${what} → ${status}`]: (r) => r.status === status };
  for (const [k, f] of Object.entries(more)) checks[`${what}: ${k}`] = f;
  const ok = check(res, checks);
  if (!ok) console.error(`${what}: got ${res.status} ${res.body && String(res.body).slice(0, 400)}`);
  if (res.status === 429) {
    console.error('rate limited: with the limits on, run the smoke test at most twice a minute from one IP (see k6/README.md)');
  }
  return ok;
}

function orderIn(list, id) {
  return list && list.items ? list.items.find((o) => o.id === id) : undefined;
}

// waitOrder waits, on the unlimited GET /v1/orders/me, until the customer's order has status.
function waitOrder(token, id, status) {
  const r = poll(() => orderIn(json(request('GET', '/v1/orders/me?limit=100', { token })), id),
    (o) => o && o.status === status && !o.pendingAction, WAIT_MS, 150);
  check(r, { [`order reaches ${status} within ${WAIT_MS} ms`]: (x) => x.ok });
  if (!r.ok) console.error(`order ${id} stuck at ${r.value && r.value.status}`);
  return r.value;
}

function payOrder(order) {
  const body = webhookEvent('payment_intent.succeeded', order);
  const sig = sign(body);
  const res = sendWebhook(body, sig);
  is(res, 200, 'POST /stripe/webhook succeeded', { 'applied': (r) => json(r) && json(r).outcome === 'applied' });
  return { body, sig };
}

function createOrder(token, lines, key = uuid()) {
  const res = request('POST', '/v1/orders', { token, idem: key, body: { items: lines } });
  is(res, 201, 'POST /v1/orders', {
    'PENDING with a PaymentIntent': (r) => json(r) && json(r).status === 'PENDING' && !!json(r).payment.paymentIntentId,
  });
  return { res, order: json(res), key };
}

export default function () {
  const run = hex(4);
  const customerEmail = `k6-smoke-${run}@example.com`;
  const password = `k6-pass-${run}`;
  let admin;
  let customer;

  group('operations', () => {
    is(request('GET', '/health'), 200, 'GET /health');
    is(request('GET', '/ready'), 200, 'GET /ready');
    is(request('GET', '/metrics', { headers: { Accept: 'text/plain' } }), 200, 'GET /metrics',
      { 'Prometheus text': (r) => String(r.body).includes('dispatch_http_requests_total') });
    is(request('GET', '/openapi.json'), 200, 'GET /openapi.json',
      { 'OpenAPI 3.1': (r) => json(r) && String(json(r).openapi).startsWith('3.1') });
    is(request('GET', '/admin/queues', { expect: 401, headers: { Accept: 'text/html' } }), 401, 'GET /admin/queues without credentials');
    is(request('GET', '/admin/queues', {
      headers: { Accept: 'text/html', Authorization: `Basic ${encoding.b64encode(`${ADMIN_UI_USER}:${ADMIN_UI_PASSWORD}`)}` },
    }), 200, 'GET /admin/queues');
    is(request('GET', '/v1/no-such-route', { expect: 404 }), 404, 'GET unknown route',
      { 'JSON error body': (r) => json(r) && json(r).success === false && json(r).statusCode === 404 });
  });

  group('auth', () => {
    admin = login('admin@dispatch.local');
    is(admin.res, 200, 'POST /v1/auth/login admin', { 'tokens': () => !!admin.token && !!admin.refresh });
    if (!admin.token) fail('admin login failed: is the demo data seeded?');
    is(request('GET', '/v1/users/me', { expect: 401 }), 401, 'GET /v1/users/me without token');
    is(request('POST', '/v1/auth/refresh', { token: 'not-a-refresh-token', expect: 401 }), 401, 'POST /v1/auth/refresh bogus token');
  });

  group('users', () => {
    const key = uuid();
    const signUp = { name: 'K6 Smoke', email: customerEmail, password };
    is(request('POST', '/v1/users', { idem: key, body: signUp }), 201, 'POST /v1/users',
      { 'self view': (r) => json(r) && json(r).email === customerEmail && json(r).role === 'user' });
    is(request('POST', '/v1/users', { idem: key, body: signUp }), 201, 'POST /v1/users replay',
      { 'Idempotent-Replayed': (r) => r.headers['Idempotent-Replayed'] === 'true' });
    is(request('POST', '/v1/users', { idem: key, body: Object.assign({}, signUp, { name: 'Other' }), expect: 422 }), 422,
      'POST /v1/users same key, other body');
    is(request('POST', '/v1/users', { idem: true, body: signUp, expect: 409 }), 409, 'POST /v1/users taken email');

    customer = login(customerEmail, password);
    is(customer.res, 200, 'POST /v1/auth/login customer');
    if (!customer.token) fail('customer login failed');
    const token = customer.token;
    is(request('GET', '/v1/users/me', { token }), 200, 'GET /v1/users/me',
      { 'own email': (r) => json(r) && json(r).email === customerEmail });
    is(request('PATCH', '/v1/users/me', { token, body: { name: 'K6 Smoke Renamed', language: 'en' } }), 200, 'PATCH /v1/users/me',
      { 'renamed': (r) => json(r) && json(r).name === 'K6 Smoke Renamed' });
    is(request('GET', '/v1/users?name=dispatch%20admin', { token, name: 'GET /v1/users' }), 200, 'GET /v1/users',
      { 'finds the admin': (r) => json(r) && json(r).items.some((u) => u.id === admin.userId) });
    is(request('GET', `/v1/users/${admin.userId}`, { token, name: 'GET /v1/users/:id' }), 200, 'GET /v1/users/:id',
      { 'public view': (r) => json(r) && json(r).email === undefined });
    is(request('GET', '/v1/users/not-a-uuid', { token, name: 'GET /v1/users/:id', expect: 400 }), 400, 'GET /v1/users/:id bad id');
  });

  group('admin users', () => {
    is(request('GET', '/v1/admin/users', { token: customer.token, expect: 403 }), 403, 'GET /v1/admin/users as customer');
    const email = `k6-smoke-staff-${run}@example.com`;
    const res = request('POST', '/v1/admin/users', { token: admin.token, idem: true,
      body: { name: 'K6 Shipper', email, password, role: 'shipper' } });
    is(res, 201, 'POST /v1/admin/users', { 'role shipper': (r) => json(r) && json(r).role === 'shipper' });
    const id = json(res) && json(res).id;
    is(request('GET', `/v1/admin/users?email=${encodeURIComponent(email)}`, { token: admin.token, name: 'GET /v1/admin/users' }), 200,
      'GET /v1/admin/users', { 'filtered': (r) => json(r) && json(r).items.length === 1 && json(r).items[0].id === id });
    is(request('GET', `/v1/admin/users/${id}`, { token: admin.token, name: 'GET /v1/admin/users/:id' }), 200, 'GET /v1/admin/users/:id');
    is(request('PATCH', `/v1/admin/users/${id}`, { token: admin.token, name: 'PATCH /v1/admin/users/:id', body: { name: 'K6 Delivery', role: 'delivery' } }),
      200, 'PATCH /v1/admin/users/:id', { 'updated': (r) => json(r) && json(r).role === 'delivery' });
    is(request('DELETE', `/v1/admin/users/${id}`, { token: admin.token, name: 'DELETE /v1/admin/users/:id' }), 204, 'DELETE /v1/admin/users/:id');
    is(request('GET', `/v1/admin/users/${id}`, { token: admin.token, name: 'GET /v1/admin/users/:id', expect: 404 }), 404,
      'GET /v1/admin/users/:id deleted');
  });

  group('items', () => {
    const token = customer.token;
    is(request('GET', '/v1/items?limit=100', { token, name: 'GET /v1/items' }), 200, 'GET /v1/items',
      { 'demo catalog': (r) => json(r) && DEMO_ITEMS.every((id) => json(r).items.some((it) => it.id === id)) });
    is(request('GET', `/v1/items/${DEMO_ITEMS[0]}`, { token, name: 'GET /v1/items/:id' }), 200, 'GET /v1/items/:id');
    is(request('POST', '/v1/admin/items', { token, idem: true, expect: 403, body: { name: 'Nope', description: 'x', price: 1, stock: 1 } }),
      403, 'POST /v1/admin/items as customer');
    const name = `K6 Smoke Item ${run}`;
    const res = request('POST', '/v1/admin/items', { token: admin.token, idem: true,
      body: { name, description: 'Created by the k6 smoke test.', price: 1234, currency: 'usd', stock: 5 } });
    is(res, 201, 'POST /v1/admin/items', { 'admin view': (r) => json(r) && json(r).price === 1234 && 'pricePaymentId' in json(r) });
    const id = json(res) && json(res).id;
    is(request('GET', `/v1/admin/items?name=${encodeURIComponent(name)}`, { token: admin.token, name: 'GET /v1/admin/items' }), 200,
      'GET /v1/admin/items', { 'filtered': (r) => json(r) && json(r).items.length === 1 });
    is(request('GET', `/v1/admin/items/${id}`, { token: admin.token, name: 'GET /v1/admin/items/:id' }), 200, 'GET /v1/admin/items/:id');
    is(request('GET', `/v1/items/${id}`, { token, name: 'GET /v1/items/:id' }), 200, 'GET /v1/items/:id new item (cached)');
    is(request('PATCH', `/v1/admin/items/${id}`, { token: admin.token, name: 'PATCH /v1/admin/items/:id', body: { price: 1500 } }), 200,
      'PATCH /v1/admin/items/:id');
    is(request('GET', `/v1/items/${id}`, { token, name: 'GET /v1/items/:id' }), 200, 'GET /v1/items/:id after PATCH',
      { 'fresh price': (r) => json(r) && json(r).price === 1500 });
    is(request('DELETE', `/v1/admin/items/${id}`, { token: admin.token, name: 'DELETE /v1/admin/items/:id' }), 204, 'DELETE /v1/admin/items/:id');
    is(request('GET', `/v1/items/${id}`, { token, name: 'GET /v1/items/:id', expect: 404 }), 404, 'GET /v1/items/:id deleted');
  });

  group('orders', () => {
    const token = customer.token;
    const staff = admin.token; // the admin belongs to every staff group (ADMIN, FINANCIAL, SHIPPING, DELIVERY)

    // A: paid by webhook, processed, shipped, delivered, refunded, deleted.
    const a = createOrder(token, [{ itemId: DEMO_ITEMS[0], quantity: 1 }, { itemId: DEMO_ITEMS[1], quantity: 2 }]);
    if (!a.order) fail('order create failed');
    const A = a.order.id;
    check(a.order, { 'order total is the sum of its lines': (o) => o.total === o.items.reduce((s, l) => s + l.subtotal, 0) });
    is(request('POST', '/v1/orders', { token, idem: a.key, body: { items: [{ itemId: DEMO_ITEMS[0], quantity: 1 }, { itemId: DEMO_ITEMS[1], quantity: 2 }] } }),
      201, 'POST /v1/orders replay', { 'same order, replayed': (r) => r.headers['Idempotent-Replayed'] === 'true' && json(r).id === A });
    is(request('POST', '/v1/orders', { token, idem: true, body: { items: [] }, expect: 400 }), 400, 'POST /v1/orders no lines');
    is(request('GET', '/v1/orders/me', { token }), 200, 'GET /v1/orders/me', { 'lists it': (r) => !!orderIn(json(r), A) });
    is(request('GET', `/v1/orders/${A}`, { token, name: 'GET /v1/orders/:id' }), 200, 'GET /v1/orders/:id',
      { 'client secret for the owner': (r) => json(r) && !!json(r).payment.clientSecret });
    is(request('GET', `/v1/orders/${A}`, { token: staff, name: 'GET /v1/orders/:id', expect: 404 }), 404, 'GET /v1/orders/:id of another user');
    is(request('PATCH', `/v1/admin/orders/${A}/ship`, { token: staff, name: 'PATCH /v1/admin/orders/:id/ship', expect: 409,
      body: { trackingNumber: 'K6-0', carrier: 'UPS' } }), 409, 'PATCH ship a PENDING order');

    const bad = webhookEvent('payment_intent.succeeded', a.order);
    is(sendWebhook(bad, sign(bad, 'whsec_wrong'), { expect: 400 }), 400, 'POST /stripe/webhook bad signature');
    const paid = payOrder(a.order);
    is(sendWebhook(paid.body, paid.sig), 200, 'POST /stripe/webhook duplicate event',
      { 'duplicate': (r) => json(r) && json(r).outcome === 'duplicate' });
    waitOrder(token, A, 'PROCESSED');
    is(request('PATCH', `/v1/admin/orders/${A}/ship`, { token: staff, name: 'PATCH /v1/admin/orders/:id/ship',
      body: { trackingNumber: `K6-${run}`, carrier: 'UPS' } }), 200, 'PATCH /v1/admin/orders/:id/ship',
    { 'SHIPPED': (r) => json(r) && json(r).status === 'SHIPPED' });
    is(request('PATCH', `/v1/admin/orders/${A}/deliver`, { token: staff, name: 'PATCH /v1/admin/orders/:id/deliver' }), 200,
      'PATCH /v1/admin/orders/:id/deliver', { 'DELIVERED': (r) => json(r) && json(r).status === 'DELIVERED' });
    is(request('PATCH', `/v1/admin/orders/${A}/refund`, { token: staff, name: 'PATCH /v1/admin/orders/:id/refund', body: { reason: 'k6 smoke' } }),
      202, 'PATCH /v1/admin/orders/:id/refund', { 'refund pending': (r) => json(r) && json(r).pendingAction === 'refund' });
    waitOrder(token, A, 'REFUNDED');
    is(request('GET', `/v1/orders/${A}/events?limit=100`, { token, name: 'GET /v1/orders/:id/events' }), 200, 'GET /v1/orders/:id/events',
      { 'whole timeline': (r) => json(r) && ['PAID', 'PROCESSED', 'SHIPPED', 'DELIVERED', 'REFUNDED'].every((s) => json(r).items.some((e) => e.toStatus === s)) });

    // B: canceled while PENDING.
    const b = createOrder(token, [{ itemId: DEMO_ITEMS[2], quantity: 1 }]);
    const B = b.order && b.order.id;
    is(request('PATCH', `/v1/admin/orders/${B}/cancel`, { token: staff, name: 'PATCH /v1/admin/orders/:id/cancel', body: { reason: 'k6 smoke' } }),
      202, 'PATCH /v1/admin/orders/:id/cancel', { 'cancel pending': (r) => json(r) && json(r).pendingAction === 'cancel' });
    waitOrder(token, B, 'CANCELED');

    // C: paid, then moved by the admin status PATCH.
    const c = createOrder(token, [{ itemId: DEMO_ITEMS[4], quantity: 3 }]);
    const C = c.order && c.order.id;
    payOrder(c.order);
    waitOrder(token, C, 'PROCESSED');
    is(request('PATCH', `/v1/admin/orders/${C}`, { token: staff, name: 'PATCH /v1/admin/orders/:id', body: { status: 'SHIPPED' }, expect: 400 }),
      400, 'PATCH /v1/admin/orders/:id SHIPPED without tracking');
    is(request('PATCH', `/v1/admin/orders/${C}`, { token: staff, name: 'PATCH /v1/admin/orders/:id',
      body: { status: 'SHIPPED', trackingNumber: `K6C-${run}`, carrier: 'DHL' } }), 200, 'PATCH /v1/admin/orders/:id SHIPPED',
    { 'SHIPPED': (r) => json(r) && json(r).status === 'SHIPPED' });
    is(request('PATCH', `/v1/admin/orders/${C}`, { token: staff, name: 'PATCH /v1/admin/orders/:id', body: { status: 'DELIVERED' } }), 200,
      'PATCH /v1/admin/orders/:id DELIVERED', { 'DELIVERED': (r) => json(r) && json(r).status === 'DELIVERED' });

    is(request('GET', `/v1/admin/orders?userId=${customer.userId}`, { token: staff, name: 'GET /v1/admin/orders' }), 200,
      'GET /v1/admin/orders', { 'the customer\'s orders': (r) => json(r) && json(r).items.length >= 2 });
    is(request('GET', `/v1/admin/orders/${C}`, { token: staff, name: 'GET /v1/admin/orders/:id' }), 200, 'GET /v1/admin/orders/:id',
      { 'no client secret for staff': (r) => json(r) && !json(r).payment.clientSecret });
    is(request('GET', '/v1/admin/orders', { token, expect: 403 }), 403, 'GET /v1/admin/orders as customer');
    is(request('DELETE', `/v1/admin/orders/${C}`, { token: staff, name: 'DELETE /v1/admin/orders/:id', expect: 409 }), 409,
      'DELETE /v1/admin/orders/:id not final');
    is(request('DELETE', `/v1/admin/orders/${A}`, { token: staff, name: 'DELETE /v1/admin/orders/:id' }), 204, 'DELETE /v1/admin/orders/:id');
    is(request('GET', `/v1/admin/orders/${A}`, { token: staff, name: 'GET /v1/admin/orders/:id', expect: 404 }), 404,
      'GET /v1/admin/orders/:id deleted');
  });

  group('notifications', () => {
    const token = customer.token;
    const r = poll(() => json(request('GET', '/v1/notifications', { token })), (l) => l.items && l.items.length > 0, WAIT_MS, 150);
    check(r, { 'GET /v1/notifications → notifications arrive': (x) => x.ok });
    const first = r.value && r.value.items && r.value.items[0];
    is(request('GET', '/v1/notifications/unread/count', { token }), 200, 'GET /v1/notifications/unread/count',
      { 'count ≥ 1': (res) => json(res) && json(res).count >= 1 });
    is(request('GET', '/v1/notifications/has-new', { token }), 200, 'GET /v1/notifications/has-new',
      { 'hasNew': (res) => json(res) && json(res).hasNew === true });
    is(request('PATCH', `/v1/notifications/${first && first.id}/read`, { token, name: 'PATCH /v1/notifications/:id/read' }), 200,
      'PATCH /v1/notifications/:id/read', { 'read': (res) => json(res) && json(res).read === true });
    is(request('PATCH', `/v1/notifications/${first && first.id}/read`, { token: admin.token, name: 'PATCH /v1/notifications/:id/read', expect: 404 }),
      404, 'PATCH /v1/notifications/:id/read of another user');
    is(request('PATCH', '/v1/notifications/read-all', { token }), 200, 'PATCH /v1/notifications/read-all',
      { 'updated': (res) => json(res) && typeof json(res).updated === 'number' });
  });

  group('session end', () => {
    const res = request('POST', '/v1/auth/refresh', { token: customer.refresh });
    is(res, 200, 'POST /v1/auth/refresh', { 'new pair': (x) => json(x) && !!json(x).accessToken && json(x).refreshToken !== customer.refresh });
    const token = json(res) && json(res).accessToken;
    is(request('DELETE', '/v1/users/me', { token }), 204, 'DELETE /v1/users/me');
    is(request('GET', '/v1/users/me', { token, expect: 401 }), 401, 'GET /v1/users/me after DELETE /v1/users/me');
    is(request('POST', '/v1/auth/logout', { token: admin.token }), 204, 'POST /v1/auth/logout');
    is(request('GET', '/v1/users/me', { token: admin.token, expect: 401 }), 401, 'GET /v1/users/me after logout');
  });
}

