/* See json.h. A recursive-descent checker with a depth limit; no allocation except
 * json_string_dup. */
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Deepest nesting accepted: deeper documents are refused, never a stack overflow. */
#define MAX_DEPTH 64

typedef struct {
  const char *p;
  const char *end;
} cursor_t;

static void skip_space(cursor_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) {
    c->p++;
  }
}

static bool literal(cursor_t *c, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
  c->p += n;
  return true;
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static bool is_hex(char ch) {
  return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool number(cursor_t *c) {
  if (c->p < c->end && *c->p == '-') c->p++;
  if (c->p >= c->end) return false;
  if (*c->p == '0') {
    c->p++;
  } else if (is_digit(*c->p)) {
    while (c->p < c->end && is_digit(*c->p)) c->p++;
  } else {
    return false;
  }
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    if (c->p >= c->end || !is_digit(*c->p)) return false;
    while (c->p < c->end && is_digit(*c->p)) c->p++;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if (c->p >= c->end || !is_digit(*c->p)) return false;
    while (c->p < c->end && is_digit(*c->p)) c->p++;
  }
  return true;
}

/* A string starting at the opening quote. Checks escapes; control characters are refused.
 * (UTF-8 validity of the bytes is the host's business: it only passes UTF-8 JSON.) */
static bool string(cursor_t *c) {
  if (c->p >= c->end || *c->p != '"') return false;
  c->p++;
  while (c->p < c->end) {
    unsigned char ch = (unsigned char)*c->p++;
    if (ch == '"') return true;
    if (ch < 0x20) return false;
    if (ch == '\\') {
      if (c->p >= c->end) return false;
      char esc = *c->p++;
      if (esc == 'u') {
        for (int i = 0; i < 4; i++) {
          if (c->p >= c->end || !is_hex(*c->p)) return false;
          c->p++;
        }
      } else if (strchr("\"\\/bfnrt", esc) == NULL || esc == '\0') {
        return false;
      }
    }
  }
  return false;
}

static bool value(cursor_t *c, int depth);

static bool object(cursor_t *c, int depth) {
  c->p++; /* '{' */
  skip_space(c);
  if (c->p < c->end && *c->p == '}') {
    c->p++;
    return true;
  }
  for (;;) {
    skip_space(c);
    if (!string(c)) return false;
    skip_space(c);
    if (c->p >= c->end || *c->p != ':') return false;
    c->p++;
    if (!value(c, depth + 1)) return false;
    skip_space(c);
    if (c->p >= c->end) return false;
    if (*c->p == '}') {
      c->p++;
      return true;
    }
    if (*c->p != ',') return false;
    c->p++;
  }
}

static bool array(cursor_t *c, int depth) {
  c->p++; /* '[' */
  skip_space(c);
  if (c->p < c->end && *c->p == ']') {
    c->p++;
    return true;
  }
  for (;;) {
    if (!value(c, depth + 1)) return false;
    skip_space(c);
    if (c->p >= c->end) return false;
    if (*c->p == ']') {
      c->p++;
      return true;
    }
    if (*c->p != ',') return false;
    c->p++;
  }
}

static bool value(cursor_t *c, int depth) {
  if (depth > MAX_DEPTH) return false;
  skip_space(c);
  if (c->p >= c->end) return false;
  switch (*c->p) {
    case '{': return object(c, depth);
    case '[': return array(c, depth);
    case '"': return string(c);
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    default: return number(c);
  }
}

bool json_is_object(const char *text, size_t len) {
  cursor_t c = {text, text + len};
  skip_space(&c);
  if (c.p >= c.end || *c.p != '{') return false;
  if (!value(&c, 0)) return false;
  skip_space(&c);
  return c.p == c.end;
}

/* True when the string literal at `start` (with quotes, `len` bytes) decodes to `key`. */
static bool key_equals(const char *start, size_t len, const char *key) {
  json_value_t literal_value = {JSON_STRING, start, len};
  char *decoded = json_string_dup(literal_value);
  bool equal = decoded != NULL && strcmp(decoded, key) == 0;
  free(decoded);
  return equal;
}

json_value_t json_member(const char *text, size_t len, const char *key) {
  json_value_t found = {JSON_MISSING, NULL, 0};
  cursor_t c = {text, text + len};
  skip_space(&c);
  c.p++; /* '{' */
  for (;;) {
    skip_space(&c);
    if (c.p >= c.end || *c.p != '"') return found; /* '}' of an empty object */
    const char *key_start = c.p;
    string(&c);
    size_t key_len = (size_t)(c.p - key_start);
    skip_space(&c);
    c.p++; /* ':' */
    skip_space(&c);
    const char *value_start = c.p;
    char first = *c.p;
    value(&c, 1);
    if (key_equals(key_start, key_len, key)) {
      found.start = value_start;
      found.len = (size_t)(c.p - value_start);
      found.kind = first == '"' ? JSON_STRING
                   : (first == '-' || is_digit(first)) ? JSON_NUMBER
                                                       : JSON_OTHER;
    }
    skip_space(&c);
    if (c.p >= c.end || *c.p != ',') return found;
    c.p++;
  }
}

static int hex_value(char ch) {
  if (is_digit(ch)) return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return ch - 'A' + 10;
}

static uint32_t read_hex4(const char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = (v << 4) | (uint32_t)hex_value(p[i]);
  return v;
}

/* Writes `cp` as UTF-8 at `out`; returns the bytes written. */
static size_t utf8_encode(uint32_t cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

char *json_string_dup(json_value_t v) {
  if (v.kind != JSON_STRING || v.len < 2) return NULL;
  /* Decoding never makes the text longer. */
  char *out = malloc(v.len);
  if (out == NULL) return NULL;
  size_t n = 0;
  const char *p = v.start + 1;
  const char *end = v.start + v.len - 1;
  while (p < end) {
    char ch = *p++;
    if (ch != '\\') {
      out[n++] = ch;
      continue;
    }
    char esc = *p++;
    switch (esc) {
      case 'b': out[n++] = '\b'; break;
      case 'f': out[n++] = '\f'; break;
      case 'n': out[n++] = '\n'; break;
      case 'r': out[n++] = '\r'; break;
      case 't': out[n++] = '\t'; break;
      case 'u': {
        uint32_t cp = read_hex4(p);
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
          uint32_t low = read_hex4(p + 2);
          if (low >= 0xDC00 && low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            p += 6;
          }
        }
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
          /* NUL cannot be in a C string; a lone surrogate is not a character. */
          free(out);
          return NULL;
        }
        n += utf8_encode(cp, out + n);
        break;
      }
      default: out[n++] = esc; break; /* '"', '\\', '/' */
    }
  }
  out[n] = '\0';
  return out;
}

size_t json_quote(const char *text, char *out) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
#define PUT(ch)                  \
  do {                           \
    if (out != NULL) out[n] = (ch); \
    n++;                         \
  } while (0)
  PUT('"');
  for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
    if (*p == '"' || *p == '\\') {
      PUT('\\');
      PUT((char)*p);
    } else if (*p < 0x20) {
      PUT('\\');
      PUT('u');
      PUT('0');
      PUT('0');
      PUT(hex[*p >> 4]);
      PUT(hex[*p & 0xF]);
    } else {
      PUT((char)*p);
    }
  }
  PUT('"');
#undef PUT
  return n;
}
