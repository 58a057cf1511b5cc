/*
 * portcullis_json.h: just enough JSON for a policy written in C, header-only, no allocation
 * except where a function says so.
 *
 * Values are spans of the original text (`pj_value`): look a member up in an object, compare
 * a string with a C string (escapes decoded), or copy a string out. Parsing is strict (RFC
 * 8259); a malformed document yields PJ_INVALID. On a duplicated key the last one wins, as in
 * Go's encoding/json and therefore in dockerd.
 *
 *   pj_value body = pj_parse(text, len);
 *   pj_value image = pj_get(body, "Image");
 *   if (image.type == PJ_STRING && pj_string_eq(image, "busybox")) ...
 */
#ifndef PORTCULLIS_JSON_H
#define PORTCULLIS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef enum { PJ_INVALID, PJ_MISSING, PJ_NULL, PJ_BOOL, PJ_NUMBER, PJ_STRING, PJ_ARRAY, PJ_OBJECT } pj_type;

/* A value: its type and its text (for strings, with the quotes). */
typedef struct {
    pj_type type;
    const char *start;
    size_t len;
} pj_value;

/* Nesting bound: deeper documents are refused rather than recursed into. */
#define PJ_MAX_DEPTH 64

static const char *pj__ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int pj__hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Skips one string starting at the quote; returns the end (after the quote) or NULL. */
static const char *pj__string(const char *p, const char *end) {
    if (p >= end || *p != '"') return NULL;
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if (++p >= end) return NULL;
            switch (*p) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
            case 'u':
                if (end - p < 5) return NULL;
                for (int i = 1; i <= 4; i++)
                    if (pj__hex(p[i]) < 0) return NULL;
                p += 4;
                break;
            default: return NULL;
            }
        }
    }
    return NULL;
}

/* Skips one value; returns its end or NULL. */
static const char *pj__value(const char *p, const char *end, pj_type *type, int depth) {
    p = pj__ws(p, end);
    if (p >= end || depth > PJ_MAX_DEPTH) return NULL;
    switch (*p) {
    case '"': *type = PJ_STRING; return pj__string(p, end);
    case 'n': *type = PJ_NULL; return (end - p >= 4 && !memcmp(p, "null", 4)) ? p + 4 : NULL;
    case 't': *type = PJ_BOOL; return (end - p >= 4 && !memcmp(p, "true", 4)) ? p + 4 : NULL;
    case 'f': *type = PJ_BOOL; return (end - p >= 5 && !memcmp(p, "false", 5)) ? p + 5 : NULL;
    case '[': case '{': {
        bool object = *p == '{';
        char close = object ? '}' : ']';
        pj_type t;
        *type = object ? PJ_OBJECT : PJ_ARRAY;
        p = pj__ws(p + 1, end);
        if (p < end && *p == close) return p + 1;
        for (;;) {
            if (object) {
                p = pj__string(pj__ws(p, end), end);
                if (!p) return NULL;
                p = pj__ws(p, end);
                if (p >= end || *p != ':') return NULL;
                p++;
            }
            p = pj__value(p, end, &t, depth + 1);
            if (!p) return NULL;
            p = pj__ws(p, end);
            if (p < end && *p == ',') { p++; continue; }
            if (p < end && *p == close) return p + 1;
            return NULL;
        }
    }
    default: {
        const char *s = p;
        *type = PJ_NUMBER;
        if (p < end && *p == '-') p++;
        if (p < end && *p == '0') p++;
        else if (p < end && *p >= '1' && *p <= '9') while (p < end && *p >= '0' && *p <= '9') p++;
        else return NULL;
        if (p < end && *p == '.') {
            if (++p >= end || *p < '0' || *p > '9') return NULL;
            while (p < end && *p >= '0' && *p <= '9') p++;
        }
        if (p < end && (*p == 'e' || *p == 'E')) {
            p++;
            if (p < end && (*p == '+' || *p == '-')) p++;
            if (p >= end || *p < '0' || *p > '9') return NULL;
            while (p < end && *p >= '0' && *p <= '9') p++;
        }
        return p > s ? p : NULL;
    }
    }
}

/* Parses a whole document (`len` bytes of `text`). */
static inline pj_value pj_parse(const char *text, size_t len) {
    pj_value v = {PJ_INVALID, text, len};
    pj_type t;
    const char *end = text + len;
    const char *p = text ? pj__value(text, end, &t, 0) : NULL;
    if (p && pj__ws(p, end) == end) {
        const char *s = pj__ws(text, end);
        v.type = t;
        v.start = s;
        v.len = (size_t)(p - s);
    }
    return v;
}

/* Decodes the next character of a string's content into `out` (UTF-8, up to 4 bytes);
 * returns the number of bytes written and advances `*p`. The string was validated. */
static size_t pj__char(const char **p, char out[4]) {
    const char *s = *p;
    if (*s != '\\') { out[0] = *s; *p = s + 1; return 1; }
    s++;
    char c = *s++;
    uint32_t u;
    switch (c) {
    case 'b': out[0] = '\b'; *p = s; return 1;
    case 'f': out[0] = '\f'; *p = s; return 1;
    case 'n': out[0] = '\n'; *p = s; return 1;
    case 'r': out[0] = '\r'; *p = s; return 1;
    case 't': out[0] = '\t'; *p = s; return 1;
    case 'u': break;
    default: out[0] = c; *p = s; return 1;
    }
    u = (uint32_t)(pj__hex(s[0]) << 12 | pj__hex(s[1]) << 8 | pj__hex(s[2]) << 4 | pj__hex(s[3]));
    s += 4;
    if (u >= 0xD800 && u < 0xDC00 && s[0] == '\\' && s[1] == 'u') {
        uint32_t lo = (uint32_t)(pj__hex(s[2]) << 12 | pj__hex(s[3]) << 8 | pj__hex(s[4]) << 4 | pj__hex(s[5]));
        if (lo >= 0xDC00 && lo < 0xE000) { u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00); s += 6; }
    }
    if (u >= 0xD800 && u < 0xE000) u = 0xFFFD; /* a lone surrogate, as Go decodes it */
    *p = s;
    if (u < 0x80) { out[0] = (char)u; return 1; }
    if (u < 0x800) { out[0] = (char)(0xC0 | u >> 6); out[1] = (char)(0x80 | (u & 0x3F)); return 2; }
    if (u < 0x10000) {
        out[0] = (char)(0xE0 | u >> 12); out[1] = (char)(0x80 | (u >> 6 & 0x3F)); out[2] = (char)(0x80 | (u & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | u >> 18); out[1] = (char)(0x80 | (u >> 12 & 0x3F));
    out[2] = (char)(0x80 | (u >> 6 & 0x3F)); out[3] = (char)(0x80 | (u & 0x3F));
    return 4;
}

/* Whether the string value `v` decodes to exactly the `len` bytes at `s`. */
static inline bool pj_string_eqn(pj_value v, const char *s, size_t len) {
    if (v.type != PJ_STRING) return false;
    const char *p = v.start + 1, *end = v.start + v.len - 1;
    size_t i = 0;
    char buf[4];
    while (p < end) {
        size_t n = pj__char(&p, buf);
        if (i + n > len || memcmp(s + i, buf, n) != 0) return false;
        i += n;
    }
    return i == len;
}

/* Whether the string value `v` decodes to the C string `s`. */
static inline bool pj_string_eq(pj_value v, const char *s) { return pj_string_eqn(v, s, strlen(s)); }

/* The decoded length of the string value `v` (0 for other types). */
static inline size_t pj_string_len(pj_value v) {
    if (v.type != PJ_STRING) return 0;
    const char *p = v.start + 1, *end = v.start + v.len - 1;
    size_t n = 0;
    char buf[4];
    while (p < end) n += pj__char(&p, buf);
    return n;
}

/* The decoded string value `v` as a new NUL-terminated string (malloc; the caller frees it),
 * or NULL when `v` is not a string. */
static inline char *pj_string_dup(pj_value v) {
    if (v.type != PJ_STRING) return NULL;
    char *out = malloc(pj_string_len(v) + 1);
    if (!out) return NULL;
    const char *p = v.start + 1, *end = v.start + v.len - 1;
    size_t i = 0;
    while (p < end) i += pj__char(&p, out + i);
    out[i] = 0;
    return out;
}

/* Calls `f(key, value, ctx)` for each member of object `v` (or element of array `v`, with a
 * key of type PJ_MISSING), in order, until it returns false. */
static inline void pj_each(pj_value v, bool (*f)(pj_value key, pj_value value, void *ctx), void *ctx) {
    if (v.type != PJ_OBJECT && v.type != PJ_ARRAY) return;
    bool object = v.type == PJ_OBJECT;
    const char *p = v.start + 1, *end = v.start + v.len - 1;
    p = pj__ws(p, end);
    while (p < end) {
        pj_value key = {PJ_MISSING, NULL, 0}, value;
        if (object) {
            const char *k = p;
            p = pj__string(k, end);
            key = (pj_value){PJ_STRING, k, (size_t)(p - k)};
            p = pj__ws(p, end) + 1; /* the ':' */
        }
        p = pj__ws(p, end);
        const char *s = p;
        p = pj__value(s, end, &value.type, 0);
        value.start = s;
        value.len = (size_t)(p - s);
        if (!f(key, value, ctx)) return;
        p = pj__ws(p, end);
        if (p < end && *p == ',') p = pj__ws(p + 1, end);
    }
}

struct pj__lookup { const char *key; size_t key_len; pj_value found; };

static bool pj__lookup_one(pj_value key, pj_value value, void *ctx) {
    struct pj__lookup *l = ctx;
    if (pj_string_eqn(key, l->key, l->key_len)) l->found = value; /* the last duplicate wins */
    return true;
}

/* The member `key` of object `v`; type PJ_MISSING when absent or when `v` is no object. */
static inline pj_value pj_getn(pj_value v, const char *key, size_t key_len) {
    struct pj__lookup l = {key, key_len, {PJ_MISSING, NULL, 0}};
    pj_each(v, pj__lookup_one, &l);
    if (v.type != PJ_OBJECT) l.found.type = PJ_MISSING;
    return l.found;
}

static inline pj_value pj_get(pj_value v, const char *key) { return pj_getn(v, key, strlen(key)); }

#endif
