/* {{name}}: an evhost plugin in C.
 *
 * Handles `Ping` events: counts them in the key-value store (key `pings`, an atomic `increment`)
 * and publishes a `Pong` event with the ping's `message`. Data that is not a JSON object is
 * rejected.
 * The bindings (plugin.h) are written by `evhost bindgen c` when ./build.sh runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evhost_util.h"
#include "json.h"
#include "plugin.h"

#define PLUGIN_NAME "{{name}}"
#define PLUGIN_VERSION "0.1.0"

typedef exports_evhost_plugin_handler_handle_error_t handle_error_t;

void exports_evhost_plugin_handler_describe(exports_evhost_plugin_handler_plugin_info_t *ret) {
  evhost_describe(ret, PLUGIN_NAME, PLUGIN_VERSION, "Ping");
}

/* Counts the ping and publishes the pong; false with `reason` set when the host failed. */
static bool answer(const char *message_json, char *reason, size_t reason_size) {
  plugin_string_t store_name = evhost_borrowed("default");
  wasi_keyvalue_store_own_bucket_t store;
  wasi_keyvalue_store_error_t error;
  if (!wasi_keyvalue_store_open(&store_name, &store, &error)) {
    wasi_keyvalue_store_error_free(&error);
    snprintf(reason, reason_size, "cannot open the key-value store");
    return false;
  }
  wasi_keyvalue_store_borrow_bucket_t bucket = wasi_keyvalue_store_borrow_bucket(store);
  plugin_string_t key = evhost_borrowed("pings");
  /* Committed with the event's acknowledgement; concurrent increments add up exactly. */
  uint64_t count = 0;
  bool ok = wasi_keyvalue_atomics_increment(bucket, &key, 1, &count, &error);
  wasi_keyvalue_store_bucket_drop_own(store);
  if (!ok) {
    wasi_keyvalue_store_error_free(&error);
    snprintf(reason, reason_size, "the key-value store failed");
    return false;
  }

  size_t size = strlen(message_json) + json_quote(PLUGIN_NAME, NULL) + 64;
  char *pong = malloc(size);
  if (pong == NULL) abort();
  size_t n = (size_t)sprintf(pong, "{\"from\":");
  n += json_quote(PLUGIN_NAME, pong + n);
  sprintf(pong + n, ",\"message\":%s,\"count\":%llu}", message_json, (unsigned long long)count);
  ok = evhost_publish_json("Pong", pong, reason, reason_size);
  free(pong);
  if (!ok) return false;

  char line[64];
  snprintf(line, sizeof line, "ping %llu answered", (unsigned long long)count);
  evhost_log(WASI_LOGGING_LOGGING_LEVEL_INFO, PLUGIN_NAME, line);
  return true;
}

bool exports_evhost_plugin_handler_handle(exports_evhost_plugin_handler_event_t *event,
                                          exports_evhost_plugin_handler_delivery_t *delivery,
                                          handle_error_t *err) {
  const char *data = (const char *)event->data.ptr;
  size_t len = event->data.len;
  bool ok = true;
  if (!json_is_object(data, len)) {
    err->tag = EVHOST_PLUGIN_TYPES_HANDLE_ERROR_REJECT;
    err->val.reject = evhost_owned("data is not a JSON object");
    ok = false;
  } else {
    /* The message as written in the ping (any JSON value), or null. */
    json_value_t message = json_member(data, len, "message");
    char *message_json = message.kind == JSON_MISSING ? strdup("null")
                                                      : strndup(message.start, message.len);
    if (message_json == NULL) abort();
    char reason[256];
    if (!answer(message_json, reason, sizeof reason)) {
      /* A host capability failed: the host delivers the event again later. */
      err->tag = EVHOST_PLUGIN_TYPES_HANDLE_ERROR_RETRY;
      err->val.retry.reason = evhost_owned(reason);
      err->val.retry.delay_ms.is_some = false;
      ok = false;
    }
    free(message_json);
  }
  exports_evhost_plugin_handler_event_free(event);
  exports_evhost_plugin_handler_delivery_free(delivery);
  return ok;
}
