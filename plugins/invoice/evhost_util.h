/* Helpers over the bindings that `evhost bindgen c` writes (plugin.h): WIT strings from C
 * strings, and a describe() answer with one subscription. Header-only. */
#ifndef EVHOST_UTIL_H
#define EVHOST_UTIL_H

#include <stdlib.h>

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

#endif
