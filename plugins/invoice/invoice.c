/* invoice: an evhost plugin in C.
 *
 * On `PaymentProcessed` with status "succeeded" it numbers an invoice from a counter in its
 * key-value store (`invoice-seq`), remembers it under `invoice:<auction_id>`, and publishes
 * `InvoiceIssued`:
 *
 *   {"invoice":"INV-000001","auction_id":"a1","bidder_id":"b1","amount":120.5}
 *
 * A failed payment is acknowledged without an invoice; a payment already invoiced is
 * acknowledged without a second one; data that is not a JSON object with the string fields
 * `auction_id` (not empty), `bidder_id`, `status` and the number `amount` is rejected
 * (dead-lettered). Config: `prefix` of the invoice numbers (default "INV-").
 *
 * The key-value writes and the publish are committed with the acknowledgement: when the event
 * is retried, none of them happened. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evhost_util.h"
#include "json.h"
#include "plugin.h"

#define PLUGIN_NAME "invoice"
#define PLUGIN_VERSION "0.1.0"
/* The longest invoice prefix taken from the config. */
#define MAX_PREFIX 32

typedef exports_evhost_plugin_handler_handle_error_t handle_error_t;

static bool reject(handle_error_t *err, const char *reason) {
  err->tag = EVHOST_PLUGIN_TYPES_HANDLE_ERROR_REJECT;
  err->val.reject = evhost_owned(reason);
  return false;
}

static bool retry(handle_error_t *err, const char *reason) {
  err->tag = EVHOST_PLUGIN_TYPES_HANDLE_ERROR_RETRY;
  err->val.retry.reason = evhost_owned(reason);
  err->val.retry.delay_ms.is_some = false;
  return false;
}

/* A key-value store error as text (the caller frees it), and the error freed. */
static char *kv_error_text(wasi_keyvalue_store_error_t *error) {
  char *text;
  if (error->tag == WASI_KEYVALUE_STORE_ERROR_OTHER) {
    text = strndup((const char *)error->val.other.ptr, error->val.other.len);
  } else if (error->tag == WASI_KEYVALUE_STORE_ERROR_NO_SUCH_STORE) {
    text = strdup("no such store");
  } else {
    text = strdup("access denied");
  }
  wasi_keyvalue_store_error_free(error);
  return text;
}

/* Turns a key-value failure into a retry with the store's reason. */
static bool kv_failure(handle_error_t *err, const char *what, wasi_keyvalue_store_error_t *error) {
  char *text = kv_error_text(error);
  char reason[512];
  snprintf(reason, sizeof reason, "key-value %s failed: %s", what, text != NULL ? text : "?");
  free(text);
  return retry(err, reason);
}

/* The config value `key`, or NULL when absent (the caller frees it). */
static char *config_value(const char *key) {
  plugin_string_t name = evhost_borrowed(key);
  plugin_option_string_t value;
  wasi_config_store_error_t error;
  if (!wasi_config_store_get(&name, &value, &error)) {
    wasi_config_store_error_free(&error);
    return NULL;
  }
  if (!value.is_some) return NULL;
  char *text = strndup((const char *)value.val.ptr, value.val.len);
  plugin_option_string_free(&value);
  return text;
}

void exports_evhost_plugin_handler_describe(exports_evhost_plugin_handler_plugin_info_t *ret) {
  evhost_describe(ret, PLUGIN_NAME, PLUGIN_VERSION, "PaymentProcessed");
}

/* The fields of a PaymentProcessed event this plugin uses. */
typedef struct {
  char *auction_id;
  char *bidder_id;
  char *status;
  char *amount; /* the number as written in the event */
} payment_t;

static void payment_free(payment_t *payment) {
  free(payment->auction_id);
  free(payment->bidder_id);
  free(payment->status);
  free(payment->amount);
}

/* Parses the event data; on failure returns false with the reason in `problem`. */
static bool parse_payment(const plugin_list_u8_t *data, payment_t *payment, char *problem,
                          size_t problem_size) {
  const char *text = (const char *)data->ptr;
  memset(payment, 0, sizeof *payment);
  if (!json_is_object(text, data->len)) {
    snprintf(problem, problem_size, "data is not a JSON object");
    return false;
  }
  const char *strings[] = {"auction_id", "bidder_id", "status"};
  char **targets[] = {&payment->auction_id, &payment->bidder_id, &payment->status};
  for (size_t i = 0; i < 3; i++) {
    json_value_t value = json_member(text, data->len, strings[i]);
    *targets[i] = json_string_dup(value);
    if (*targets[i] == NULL) {
      snprintf(problem, problem_size, "field `%s` %s", strings[i],
               value.kind == JSON_MISSING  ? "is missing"
               : value.kind == JSON_STRING ? "holds a NUL character or a lone surrogate"
                                           : "must be a string");
      return false;
    }
  }
  json_value_t amount = json_member(text, data->len, "amount");
  if (amount.kind != JSON_NUMBER) {
    snprintf(problem, problem_size, "field `amount` %s",
             amount.kind == JSON_MISSING ? "is missing" : "must be a number");
    return false;
  }
  payment->amount = strndup(amount.start, amount.len);
  if (payment->amount == NULL) abort();
  if (payment->auction_id[0] == '\0') {
    snprintf(problem, problem_size, "field `auction_id` is empty");
    return false;
  }
  return true;
}

/* Builds the InvoiceIssued data (the caller frees it). */
static char *invoice_json(const char *invoice, const payment_t *payment) {
  size_t size = 64 + json_quote(invoice, NULL) + json_quote(payment->auction_id, NULL) +
                json_quote(payment->bidder_id, NULL) + strlen(payment->amount);
  char *out = malloc(size);
  if (out == NULL) abort();
  size_t n = 0;
  n += (size_t)sprintf(out + n, "{\"invoice\":");
  n += json_quote(invoice, out + n);
  n += (size_t)sprintf(out + n, ",\"auction_id\":");
  n += json_quote(payment->auction_id, out + n);
  n += (size_t)sprintf(out + n, ",\"bidder_id\":");
  n += json_quote(payment->bidder_id, out + n);
  sprintf(out + n, ",\"amount\":%s}", payment->amount);
  return out;
}

/* Issues the invoice of `payment` with the store `bucket`; false with `err` set on failure. */
static bool issue(wasi_keyvalue_store_borrow_bucket_t bucket, const payment_t *payment,
                  handle_error_t *err) {
  wasi_keyvalue_store_error_t error;
  size_t key_size = strlen("invoice:") + strlen(payment->auction_id) + 1;
  char *key_text = malloc(key_size);
  if (key_text == NULL) abort();
  snprintf(key_text, key_size, "invoice:%s", payment->auction_id);
  plugin_string_t key = evhost_borrowed(key_text);

  bool exists = false;
  if (!wasi_keyvalue_store_method_bucket_exists(bucket, &key, &exists, &error)) {
    free(key_text);
    return kv_failure(err, "exists", &error);
  }
  if (exists) {
    char message[256];
    snprintf(message, sizeof message, "auction %.200s is already invoiced", payment->auction_id);
    evhost_log(WASI_LOGGING_LOGGING_LEVEL_INFO, PLUGIN_NAME, message);
    free(key_text);
    return true;
  }

  /* The counter: a decimal number, 0 when absent. */
  plugin_string_t seq_key = evhost_borrowed("invoice-seq");
  plugin_option_list_u8_t current;
  if (!wasi_keyvalue_store_method_bucket_get(bucket, &seq_key, &current, &error)) {
    free(key_text);
    return kv_failure(err, "get", &error);
  }
  unsigned long long seq = 0;
  if (current.is_some) {
    char digits[24] = {0};
    size_t len = current.val.len < sizeof digits - 1 ? current.val.len : sizeof digits - 1;
    memcpy(digits, current.val.ptr, len);
    seq = strtoull(digits, NULL, 10);
    plugin_option_list_u8_free(&current);
  }
  seq++;

  char *prefix = config_value("prefix");
  char invoice[MAX_PREFIX + 24];
  snprintf(invoice, sizeof invoice, "%.*s%06llu", MAX_PREFIX,
           prefix != NULL ? prefix : "INV-", seq);
  free(prefix);

  char seq_text[24];
  snprintf(seq_text, sizeof seq_text, "%llu", seq);
  plugin_list_u8_t seq_value = {(uint8_t *)seq_text, strlen(seq_text)};
  plugin_list_u8_t invoice_value = {(uint8_t *)invoice, strlen(invoice)};
  bool stored = wasi_keyvalue_store_method_bucket_set(bucket, &seq_key, &seq_value, &error) &&
                wasi_keyvalue_store_method_bucket_set(bucket, &key, &invoice_value, &error);
  free(key_text);
  if (!stored) return kv_failure(err, "set", &error);

  char *data = invoice_json(invoice, payment);
  char reason[512];
  bool published = evhost_publish_json("InvoiceIssued", data, reason, sizeof reason);
  free(data);
  if (!published) return retry(err, reason);

  plugin_string_t counter = evhost_borrowed("invoices_issued");
  plugin_list_tuple2_string_string_t no_labels = {NULL, 0};
  plugin_string_t metric_error;
  if (!evhost_plugin_metrics_counter_add(&counter, 1.0, &no_labels, &metric_error)) {
    plugin_string_free(&metric_error);
  }
  return true;
}

bool exports_evhost_plugin_handler_handle(exports_evhost_plugin_handler_event_t *event,
                                          exports_evhost_plugin_handler_delivery_t *delivery,
                                          handle_error_t *err) {
  payment_t payment;
  char problem[128];
  bool ok;
  if (!parse_payment(&event->data, &payment, problem, sizeof problem)) {
    ok = reject(err, problem);
  } else if (strcmp(payment.status, "succeeded") != 0) {
    ok = true; /* no invoice for a failed payment */
  } else {
    plugin_string_t store_name = evhost_borrowed("default");
    wasi_keyvalue_store_own_bucket_t bucket;
    wasi_keyvalue_store_error_t error;
    if (!wasi_keyvalue_store_open(&store_name, &bucket, &error)) {
      ok = kv_failure(err, "open", &error);
    } else {
      ok = issue(wasi_keyvalue_store_borrow_bucket(bucket), &payment, err);
      wasi_keyvalue_store_bucket_drop_own(bucket);
    }
  }
  payment_free(&payment);
  exports_evhost_plugin_handler_event_free(event);
  exports_evhost_plugin_handler_delivery_free(delivery);
  return ok;
}
