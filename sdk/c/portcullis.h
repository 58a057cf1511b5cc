/*
 * portcullis.h: helpers for portcullis plugins written in C.
 *
 * A C plugin implements the five functions that wit-bindgen's C generator declares in
 * `plugin.h` from the WIT package `sdk/wit/0.2.0/plugin.wit` (portcullis:plugin@0.2.0):
 *
 *   void exports_portcullis_plugin_policy_describe(portcullis_plugin_types_info_t *ret);
 *   bool exports_portcullis_plugin_policy_init(plugin_string_t *config, plugin_string_t *err);
 *   void exports_portcullis_plugin_policy_on_request(pc_request_t *req, pc_verdict_t *ret);
 *   void exports_portcullis_plugin_policy_on_response(pc_request_t *req, pc_response_t *resp, pc_verdict_t *ret);
 *   void exports_portcullis_plugin_policy_on_audit(pc_request_t *req, plugin_string_t *record, pc_verdict_t *ret);
 *
 * Ownership follows the canonical ABI as wit-bindgen maps it: arguments belong to the callee
 * (free them with the generated `*_free` functions or `pc_request_free`), and everything put
 * into `*ret` or `*err` must be heap memory (the generated post-return code frees it): use
 * the helpers below, which copy.
 *
 * Every request runs on a fresh instance: `init` runs first (keep what it parses in
 * globals), then the hook. A request's response hook usually runs in the instance its
 * request hook ran in, but may get a fresh one; nothing survives to the next request.
 *
 * `portcullis_json.h` reads JSON (the request body, the configuration).
 */
#ifndef PORTCULLIS_H
#define PORTCULLIS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"
#include "portcullis_json.h"

typedef portcullis_plugin_types_request_t pc_request_t;
typedef portcullis_plugin_types_response_t pc_response_t;
typedef portcullis_plugin_types_verdict_t pc_verdict_t;
typedef portcullis_plugin_types_info_t pc_info_t;

/* printf arguments for a WIT string: printf("%.*s", PC_STR(req->endpoint)). */
#define PC_STR(s) (int)(s).len, (const char *)(s).ptr

/* Whether the WIT string `s` equals the C string `c`. */
static inline bool pc_eq(const plugin_string_t *s, const char *c) {
    size_t n = strlen(c);
    return s->len == n && memcmp(s->ptr, c, n) == 0;
}

/* The WIT string `s` parsed as JSON (a span of it: keep `s` alive while using the value). */
static inline pj_value pc_json(const plugin_string_t *s) { return pj_parse((const char *)s->ptr, s->len); }

/* The request body parsed as JSON; type PJ_MISSING when there is none. */
static inline pj_value pc_body(const pc_request_t *req) {
    if (!req->body.is_some) return (pj_value){PJ_MISSING, NULL, 0};
    return pc_json(&req->body.val);
}

/* The first value of header `name` (lowercase) or query parameter, or NULL. */
static inline const plugin_string_t *pc_pair(const portcullis_plugin_types_list_pair_t *pairs, const char *name) {
    for (size_t i = 0; i < pairs->len; i++)
        if (pc_eq(&pairs->ptr[i].name, name)) return &pairs->ptr[i].value;
    return NULL;
}

/* The value of label `key` on the request's target object, or NULL. */
static inline const plugin_string_t *pc_target_label(const pc_request_t *req, const char *key) {
    return req->target.is_some ? pc_pair(&req->target.val.labels, key) : NULL;
}

/* A small printf for messages: %s, %.*s, %d, %u, %zu and %%. (libc's printf family links
 * stdio's exit handlers and with them WASI file imports; a plugin needs none, and without
 * them its component imports nothing but the portcullis world.) Writes at most `cap` bytes
 * to `buf` (which may be NULL) and returns the full length. */
static inline size_t pc__format(char *buf, size_t cap, const char *fmt, va_list ap) {
    size_t n = 0;
#define PC__PUT(c) do { if (n < cap) buf[n] = (c); n++; } while (0)
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') { PC__PUT(*f); continue; }
        f++;
        if (*f == '%') { PC__PUT('%'); continue; }
        if (*f == 's') {
            const char *s = va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++) PC__PUT(*s);
        } else if (f[0] == '.' && f[1] == '*' && f[2] == 's') {
            int len = va_arg(ap, int);
            const char *s = va_arg(ap, const char *);
            for (int i = 0; i < len; i++) PC__PUT(s[i]);
            f += 2;
        } else if (*f == 'd' || *f == 'u' || (f[0] == 'z' && f[1] == 'u')) {
            unsigned long long v;
            if (*f == 'd') {
                long long d = va_arg(ap, int);
                if (d < 0) { PC__PUT('-'); v = (unsigned long long)(-(d + 1)) + 1; } else v = (unsigned long long)d;
            } else if (*f == 'u') {
                v = va_arg(ap, unsigned);
            } else {
                v = va_arg(ap, size_t);
                f++;
            }
            char digits[24];
            int k = 0;
            do { digits[k++] = (char)('0' + v % 10); v /= 10; } while (v);
            while (k) PC__PUT(digits[--k]);
        } else {
            PC__PUT('%'); /* unsupported: copied as is */
            if (*f) PC__PUT(*f); else break;
        }
    }
#undef PC__PUT
    return n;
}

/* A heap-allocated, NUL-terminated formatted string (see pc__format). Returns its length, or
 * -1 when out of memory. */
static inline int pc__vformat(char **out, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    size_t n = pc__format(NULL, 0, fmt, ap2);
    va_end(ap2);
    *out = malloc(n + 1);
    if (!*out) return -1;
    pc__format(*out, n, fmt, ap);
    (*out)[n] = 0;
    return (int)n;
}

/* Fills `info` (strings copied). `hooks` is a mask of PORTCULLIS_PLUGIN_TYPES_HOOKS_*. */
static inline void pc_describe(pc_info_t *info, const char *name, const char *version, uint8_t hooks) {
    plugin_string_dup(&info->name, name);
    plugin_string_dup(&info->version, version);
    info->hooks = hooks;
}

/* Let it pass unchanged. */
static inline void pc_allow(pc_verdict_t *ret) { ret->tag = PORTCULLIS_PLUGIN_TYPES_VERDICT_ALLOW; }

/* Refuse it with `status` and a message (pc__format's subset of printf); the docker CLI shows
 * `Error response from daemon: <plugin>: <message>`. */
__attribute__((format(printf, 3, 4)))
static inline void pc_deny(pc_verdict_t *ret, uint16_t status, const char *fmt, ...) {
    va_list ap;
    char *msg = NULL;
    va_start(ap, fmt);
    int n = pc__vformat(&msg, fmt, ap);
    va_end(ap);
    ret->tag = PORTCULLIS_PLUGIN_TYPES_VERDICT_DENY;
    ret->val.deny.status = status;
    if (n < 0 || !msg) {
        plugin_string_dup(&ret->val.deny.message, "denied");
        return;
    }
    ret->val.deny.message.ptr = (uint8_t *)msg;
    ret->val.deny.message.len = (size_t)n;
}

/* Let it pass with a JSON Patch (RFC 6902 array, as text) on the body; request patches
 * need `phase = "mutate"`. Header and query edits: fill ret->val.patch.headers/query. */
static inline void pc_patch_body(pc_verdict_t *ret, const char *json_patch) {
    memset(ret, 0, sizeof *ret);
    ret->tag = PORTCULLIS_PLUGIN_TYPES_VERDICT_PATCH;
    ret->val.patch.body.is_some = true;
    plugin_string_dup(&ret->val.patch.body.val, json_patch);
}

/* Refuses the configuration from `init`: sets `*err` (printf-style) and returns false, so
 * `return pc_config_error(err, "...");` reads naturally. */
__attribute__((format(printf, 2, 3)))
static inline bool pc_config_error(plugin_string_t *err, const char *fmt, ...) {
    va_list ap;
    char *msg = NULL;
    va_start(ap, fmt);
    int n = pc__vformat(&msg, fmt, ap);
    va_end(ap);
    if (n < 0 || !msg) {
        plugin_string_dup(err, "invalid configuration");
        return false;
    }
    err->ptr = (uint8_t *)msg;
    err->len = (size_t)n;
    return false;
}

/* A line in the gateway's log (printf-style), tagged with the plugin's name and the request
 * id. `level` is PORTCULLIS_PLUGIN_HOST_LEVEL_{TRACE,DEBUG,INFO,WARN,ERROR}. */
__attribute__((format(printf, 2, 3)))
static inline void pc_log(portcullis_plugin_host_level_t level, const char *fmt, ...) {
    va_list ap;
    char *msg = NULL;
    va_start(ap, fmt);
    int n = pc__vformat(&msg, fmt, ap);
    va_end(ap);
    if (n < 0 || !msg) return;
    plugin_string_t s = {(uint8_t *)msg, (size_t)n};
    portcullis_plugin_host_log(level, &s);
    free(msg);
}

/* Frees a request argument (the callee owns its arguments). */
static inline void pc_request_free(pc_request_t *req) { portcullis_plugin_types_request_free(req); }

#endif
