/* Native tests of json.c: known documents, then 400,000 mutated ones. Build and run with a
 * sanitizer, so that any out-of-bounds read or undefined behaviour fails the run:
 *
 *   cc -std=c11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -I.. \
 *      json_test.c ../json.c -o /tmp/json_test && /tmp/json_test
 *
 * (tests/cli/c_plugin.rs does exactly this.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static int failures = 0;

static void expect(int condition, const char *what) {
  if (!condition) {
    fprintf(stderr, "FAIL: %s\n", what);
    failures++;
  }
}

static int is_object(const char *text) { return json_is_object(text, strlen(text)); }

/* The decoded string member `key` of `text`, or NULL; the caller frees it. */
static char *member_string(const char *text, const char *key) {
  return json_string_dup(json_member(text, strlen(text), key));
}

static void known_documents(void) {
  const char *valid[] = {
      "{}", " {\"a\":1} ", "{\"a\":[1,-2.5e+3,true,false,null,{\"b\":\"c\"}]}",
      "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"}", "{\"a\":0.5,\"b\":-0,\"c\":1E5}",
  };
  for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) expect(is_object(valid[i]), valid[i]);
  const char *invalid[] = {
      "",          "[]",          "\"a\"",        "{",         "{\"a\":1,}", "{\"a\" 1}",
      "{\"a\":01}", "{\"a\":1.}",  "{\"a\":.5}",   "{\"a\":+1}", "{\"a\":tru}", "{\"a\":\"\\x\"}",
      "{\"a\":\"\x01\"}", "{a:1}",  "{\"a\":1} x", "{\"a\":\"\\u12\"}",
  };
  for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
    expect(!is_object(invalid[i]), invalid[i]);
  }

  const char *doc = "{\"id\":\"x\",\"n\":12.5,\"id\":\"\\u00e9t\\u00e9 \\ud83d\\ude00\",\"o\":{}}";
  char *id = member_string(doc, "id");
  expect(id != NULL && strcmp(id, "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80") == 0,
         "the last duplicate key wins, escapes and surrogate pairs decode to UTF-8");
  free(id);
  json_value_t n = json_member(doc, strlen(doc), "n");
  expect(n.kind == JSON_NUMBER && n.len == 4 && memcmp(n.start, "12.5", 4) == 0, "number text");
  expect(json_member(doc, strlen(doc), "o").kind == JSON_OTHER, "object member");
  expect(json_member(doc, strlen(doc), "missing").kind == JSON_MISSING, "missing member");
  expect(member_string("{\"a\":\"\\u0000\"}", "a") == NULL, "NUL is refused");
  expect(member_string("{\"a\":\"\\ud800\"}", "a") == NULL, "a lone surrogate is refused");

  char quoted[64];
  size_t len = json_quote("a\"b\\c\n", quoted);
  expect(len == json_quote("a\"b\\c\n", NULL) && len == 15 &&
             memcmp(quoted, "\"a\\\"b\\\\c\\u000a\"", len) == 0,
         "json_quote escapes quotes, backslashes and control characters");

  /* Deep nesting is refused, never a stack overflow. */
  size_t deep_len = 200000;
  char *deep = malloc(deep_len);
  if (deep == NULL) abort();
  memcpy(deep, "{\"a\":", 5);
  memset(deep + 5, '[', deep_len - 5);
  expect(!json_is_object(deep, deep_len), "200,000 nested arrays are refused");
  free(deep);
}

/* Mutated documents: whatever the bytes, no out-of-bounds access (the sanitizer checks), and
 * every accepted document's members can be read and re-quoted. */
static void mutated_documents(void) {
  const char *seeds[] = {
      "{\"auction_id\":\"a1\",\"bidder_id\":\"b\\\"1\",\"amount\":120.5,\"status\":\"ok\"}",
      " {\"a\":\"\\u00e9\",\"x\":[{\"y\":[1,null,true,false,-0.5e+3]}],\"s\":\"\\ud83d\\ude00\"} ",
      "{\"a\":\"\\u0000\",\"b\":\"\\ud800\",\"c\":{}}",
  };
  const char alphabet[] = "{}[]\",:\\u0e-";
  char buf[256];
  unsigned state = 1;
  long accepted = 0;
  for (long round = 0; round < 400000; round++) {
    const char *seed = seeds[round % (sizeof seeds / sizeof *seeds)];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    for (int m = (int)(round % 4); m > 0; m--) {
      state = state * 1103515245u + 12345u;
      size_t at = (state >> 8) % len;
      switch ((state >> 4) % 3) {
        case 0: buf[at] = (char)(state >> 16); break;
        case 1: if (len > 1) { memmove(buf + at, buf + at + 1, len - at - 1); len--; } break;
        default:
          if (len < sizeof buf) {
            memmove(buf + at + 1, buf + at, len - at);
            buf[at] = alphabet[(state >> 16) % (sizeof alphabet - 1)];
            len++;
          }
      }
    }
    /* An exact-size heap copy: a read one byte past the end is caught. */
    char *copy = malloc(len);
    if (copy == NULL) abort();
    memcpy(copy, buf, len);
    if (json_is_object(copy, len)) {
      accepted++;
      const char *keys[] = {"auction_id", "a", "x", "s", "b"};
      for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        char *decoded = json_string_dup(json_member(copy, len, keys[k]));
        if (decoded != NULL) {
          char *quoted = malloc(json_quote(decoded, NULL));
          if (quoted == NULL) abort();
          json_quote(decoded, quoted);
          free(quoted);
          free(decoded);
        }
      }
    }
    free(copy);
  }
  expect(accepted > 10000 && accepted < 400000, "mutations give both valid and invalid documents");
}

int main(void) {
  known_documents();
  mutated_documents();
  if (failures > 0) {
    fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  printf("json.c: all checks passed\n");
  return 0;
}
