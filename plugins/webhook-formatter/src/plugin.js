// webhook-formatter: an evhost plugin in JavaScript.
//
// On `PaymentProcessed` it formats a webhook body (`format.js`), stores it in the key-value
// store under `webhook:<event id>` and publishes `WebhookFormatted` with the key, the target
// endpoint (config value `endpoint`) and the body. Data that is not a valid payment is rejected
// (never retried); a failing host capability makes the event retry.

import { log } from 'wasi:logging/logging@0.1.0-draft';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { get as configGet } from 'wasi:config/store@0.2.0-rc.1';
import { publish } from 'evhost:plugin/publisher@0.1.0';

import { BadEvent, DEFAULT_CURRENCY, formatWebhook, parsePayment } from './format.js';

const NAME = 'webhook-formatter';
const VERSION = '0.1.0';
const encoder = new TextEncoder();

/** A `handle-error` telling the host to retry later. */
class Retry {
  constructor(reason) {
    this.tag = 'retry';
    this.val = { reason, delayMs: undefined };
  }
}

/** A `handle-error` telling the host never to retry. */
class Reject {
  constructor(reason) {
    this.tag = 'reject';
    this.val = reason;
  }
}

/** The payload of a failed import call (a WIT `result` error), as text. */
function hostError(err) {
  const payload = err && Object.hasOwn(err, 'payload') ? err.payload : err;
  return typeof payload === 'string' ? payload : JSON.stringify(payload);
}

/** The correlation id: the `correlationid` extension, else the event's own id. */
function correlationId(event) {
  const found = event.extensions.find(([key]) => key === 'correlationid');
  return found ? found[1] : event.id;
}

function format(event) {
  let payment;
  try {
    payment = parsePayment(event.data);
  } catch (err) {
    if (err instanceof BadEvent) {
      throw new Reject(`event ${event.id}: ${err.message}`);
    }
    throw err;
  }
  const currency = configGet('currency') ?? DEFAULT_CURRENCY;
  const endpoint = configGet('endpoint') ?? '';
  const body = formatWebhook(
    payment,
    { id: event.id, time: event.time, correlationId: correlationId(event) },
    currency,
  );
  const key = `webhook:${event.id}`;
  open('default').set(key, encoder.encode(JSON.stringify(body)));
  publish({
    type: 'WebhookFormatted',
    data: encoder.encode(JSON.stringify({ key, endpoint, body })),
    datacontenttype: undefined,
    extensions: [],
  });
  log('debug', NAME, `formatted ${body.type} webhook ${body.id}`);
}

/** The `evhost:plugin/handler` export. */
export const handler = {
  describe() {
    return { name: NAME, version: VERSION, subscriptions: ['PaymentProcessed'] };
  },

  handle(event, _delivery) {
    try {
      format(event);
    } catch (err) {
      if (err instanceof Retry || err instanceof Reject) {
        throw err;
      }
      // A host capability (config, key-value store, publisher) failed: try again later.
      throw new Retry(`host capability failed: ${hostError(err)}`);
    }
  },
};
