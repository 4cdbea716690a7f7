// The webhook payload of a `PaymentProcessed` event, free of any WebAssembly binding, so that
// it can be unit-tested with plain Node (`node --test test/`).

/** Currency of amounts when the config value `currency` is not set. */
export const DEFAULT_CURRENCY = 'EUR';

/** The data of an event can never be formatted (not JSON, a missing or invalid field). */
export class BadEvent extends Error {}

function id(data, name) {
  const value = data[name];
  if (typeof value !== 'string' && !Number.isInteger(value)) {
    throw new BadEvent(`${name} must be a string or an integer`);
  }
  const text = String(value).trim();
  if (text === '') {
    throw new BadEvent(`${name} is empty`);
  }
  return text;
}

/**
 * Parses the UTF-8 JSON data of a `PaymentProcessed` event
 * (`auction_id`, `bidder_id`, `amount`, `status`, optional `reason`).
 */
export function parsePayment(bytes) {
  let data;
  try {
    data = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new BadEvent(`data is not JSON: ${err.message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new BadEvent('data is not a JSON object');
  }
  if (typeof data.amount !== 'number' || !Number.isFinite(data.amount)) {
    throw new BadEvent('amount must be a number');
  }
  if (data.status !== 'succeeded' && data.status !== 'failed') {
    throw new BadEvent('status must be "succeeded" or "failed"');
  }
  return {
    auctionId: id(data, 'auction_id'),
    bidderId: id(data, 'bidder_id'),
    amount: data.amount,
    status: data.status,
    reason: typeof data.reason === 'string' ? data.reason : null,
  };
}

/**
 * The webhook body for `payment` (from `parsePayment`) of the event `event`
 * (`{ id, time, correlationId }`), in `currency`.
 */
export function formatWebhook(payment, event, currency) {
  const body = {
    id: `whk_${event.id}`,
    type: `payment.${payment.status}`,
    created: event.time,
    correlation_id: event.correlationId,
    data: {
      auction_id: payment.auctionId,
      bidder_id: payment.bidderId,
      amount: {
        value: payment.amount,
        currency,
        display: `${payment.amount.toFixed(2)} ${currency}`,
      },
    },
  };
  if (payment.reason !== null) {
    body.data.failure_reason = payment.reason;
  }
  return body;
}
