/* A small reader for the flat JSON objects of event payloads: it checks that the whole text is
 * one valid JSON value (RFC 8259) and finds the top-level members of an object. Strings are
 * returned decoded (escapes resolved, UTF-8), numbers as their original text. */
#ifndef EVHOST_JSON_H
#define EVHOST_JSON_H

#include <stdbool.h>
#include <stddef.h>

/* A top-level member's value as found in the text. */
typedef enum { JSON_MISSING, JSON_STRING, JSON_NUMBER, JSON_OTHER } json_kind_t;

/* A value: `kind`, and the text of the value (`start`, `len`) inside the document. */
typedef struct {
  json_kind_t kind;
  const char *start;
  size_t len;
} json_value_t;

/* True when `text` (`len` bytes) is exactly one JSON object, with optional white space. */
bool json_is_object(const char *text, size_t len);

/* The top-level member `key` of the object `text` (which json_is_object accepted).
 * A key that appears twice gives its last value, as most JSON readers do. */
json_value_t json_member(const char *text, size_t len, const char *key);

/* Decodes the JSON string `value` (kind JSON_STRING) into a new NUL-terminated buffer that the
 * caller frees. Returns NULL when the string holds a NUL character or memory runs out. */
char *json_string_dup(json_value_t value);

/* Appends `text` to `out` as a JSON string literal with quotes; returns the bytes written, or
 * the bytes needed when `out` is NULL. */
size_t json_quote(const char *text, char *out);

#endif
