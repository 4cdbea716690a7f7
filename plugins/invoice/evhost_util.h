/* Helpers over the bindings that `evhost bindgen c` writes (plugin.h): WIT strings from C
 * strings, a describe() answer with one subscription, logging, publishing JSON. Header-only. */
#ifndef EVHOST_UTIL_H
#define EVHOST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

/* A heap copy of `text` as a WIT string: what a plugin returns, the host frees. */
static inline plugin_string_t evhost_owned(const char *text) {
  plugin_string_t s;
  plugin_string_dup(&s, text);
  return s;
}

/* A WIT string that borrows `text` for the duration of a call. */
static inline plugin_string_t evhost_borrowed(const char *text) {
  plugin_string_t s;
  plugin_string_set(&s, text);
  return s;
}

/* Fills describe()'s answer: name, version and the one event type (or pattern) subscribed. */
static inline void evhost_describe(exports_evhost_plugin_handler_plugin_info_t *ret,
                                   const char *name, const char *version,
                                   const char *subscription) {
  ret->name = evhost_owned(name);
  ret->version = evhost_owned(version);
  ret->subscriptions.len = 1;
  ret->subscriptions.ptr = malloc(sizeof(plugin_string_t));
  if (ret->subscriptions.ptr == NULL) abort();
  ret->subscriptions.ptr[0] = evhost_owned(subscription);
}

/* Logs `message` at `level` with the plugin's name as context. */
static inline void evhost_log(wasi_logging_logging_level_t level, const char *plugin,
                              const char *message) {
  plugin_string_t context = evhost_borrowed(plugin);
  plugin_string_t text = evhost_borrowed(message);
  wasi_logging_logging_log(level, &context, &text);
}

/* Publishes an event of `type` with the JSON text `json` as its data. On failure returns false
 * with the host's reason in `reason` (`reason_size` bytes). */
static inline bool evhost_publish_json(const char *type, const char *json, char *reason,
                                       size_t reason_size) {
  evhost_plugin_publisher_outgoing_event_t event = {0};
  event.type = evhost_borrowed(type);
  event.data.ptr = (uint8_t *)json;
  event.data.len = strlen(json);
  plugin_string_t id;
  plugin_string_t error;
  if (!evhost_plugin_publisher_publish(&event, &id, &error)) {
    snprintf(reason, reason_size, "publish failed: %.*s", (int)error.len,
             (const char *)error.ptr);
    plugin_string_free(&error);
    return false;
  }
  plugin_string_free(&id);
  return true;
}

#endif
