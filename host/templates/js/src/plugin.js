// {{name}}: an evhost plugin in JavaScript.
//
// Handles `Ping` events: counts them in the key-value store (key `pings`, an atomic `increment`)
// and publishes a `Pong` event with the ping's `message`. Data that is not a JSON object is
// rejected.

import { log } from 'wasi:logging/logging@0.1.0-draft';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { increment } from 'wasi:keyvalue/atomics@0.2.0-draft';
import { publish } from 'evhost:plugin/publisher@0.1.0';

const NAME = '{{name}}';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Formats an integer with thousands separators, `1234567` as `1,234,567`. ComponentizeJS has
 * no `Intl`: `Intl.NumberFormat`, `Intl.DateTimeFormat` and `toLocaleString(locale, options)`
 * throw, and the call traps. Format numbers and dates by hand like this (or with
 * `Date.prototype.toISOString`).
 */
function formatThousands(value) {
  const digits = String(Math.abs(Math.trunc(value))).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return value < 0 ? `-${digits}` : digits;
}

/** The `evhost:plugin/handler` export. */
export const handler = {
  describe() {
    return { name: NAME, version: '0.1.0', subscriptions: ['Ping'] };
  },

  handle(event, _delivery) {
    let ping;
    try {
      ping = JSON.parse(decoder.decode(event.data));
    } catch (err) {
      throw { tag: 'reject', val: `event ${event.id}: not JSON: ${err.message}` };
    }
    if (ping === null || typeof ping !== 'object' || Array.isArray(ping)) {
      throw { tag: 'reject', val: `event ${event.id}: data is not a JSON object` };
    }
    let count;
    try {
      const bucket = open('default');
      // Committed with the event's acknowledgement; concurrent increments add up exactly.
      count = Number(increment(bucket, 'pings', 1n));
      const pong = { from: NAME, message: ping.message ?? null, count };
      publish({
        type: 'Pong',
        data: encoder.encode(JSON.stringify(pong)),
        datacontenttype: undefined,
        extensions: [],
      });
    } catch (err) {
      // A host capability failed: the host delivers the event again later.
      const reason = err && Object.hasOwn(err, 'payload') ? JSON.stringify(err.payload) : String(err);
      throw { tag: 'retry', val: { reason: `host capability: ${reason}`, delayMs: undefined } };
    }
    log('info', NAME, `ping ${formatThousands(count)} answered`);
  },
};
