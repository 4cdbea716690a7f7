// Unit tests of the webhook formatting: `node --test test/` (no Wasm needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { BadEvent, formatWebhook, parsePayment } from '../src/format.js';

const bytes = (value) => new TextEncoder().encode(JSON.stringify(value));

test('formats a successful payment', () => {
  const payment = parsePayment(
    bytes({ auction_id: 7, bidder_id: 'b1', amount: 120.5, status: 'succeeded' }),
  );
  const body = formatWebhook(payment, { id: 'e1', time: 't', correlationId: 'c' }, 'USD');
  assert.equal(body.id, 'whk_e1');
  assert.equal(body.type, 'payment.succeeded');
  assert.equal(body.data.auction_id, '7');
  assert.equal(body.data.amount.display, '120.50 USD');
  assert.equal(body.data.failure_reason, undefined);
});

test('keeps the reason of a failed payment', () => {
  const payment = parsePayment(
    bytes({ auction_id: 'a', bidder_id: 'b', amount: 0, status: 'failed', reason: 'limit' }),
  );
  const body = formatWebhook(payment, { id: 'e2', time: 't', correlationId: '' }, 'EUR');
  assert.equal(body.type, 'payment.failed');
  assert.equal(body.data.failure_reason, 'limit');
});

test('rejects unusable data', () => {
  for (const data of [
    new TextEncoder().encode('not json'),
    bytes([1]),
    bytes({ auction_id: 'a', bidder_id: 'b', amount: '1', status: 'succeeded' }),
    bytes({ auction_id: 'a', bidder_id: ' ', amount: 1, status: 'succeeded' }),
    bytes({ auction_id: 'a', bidder_id: 'b', amount: 1, status: 'pending' }),
  ]) {
    assert.throws(() => parsePayment(data), BadEvent);
  }
});
