/*
 * {{name}}: a portcullis plugin.
 *
 * Denies containers that are privileged or that lack the labels the configuration requires.
 * Configuration (the plugin's `config` table in the gateway configuration):
 *
 *   required_labels = ["com.example.owner"]
 *
 * Build: ./build.sh (wit-bindgen c, clang --target=wasm32-wasi, wasm-tools component new)
 * -> {{name}}.wasm. Test: ./test.sh. Helpers: portcullis.h, portcullis_json.h.
 */
#include "portcullis.h"

/* What init parsed. Every call runs on a fresh instance: init, then one hook. */
static char *config_text; /* the configuration, kept so its JSON spans stay valid */
static pj_value required_labels;

void exports_portcullis_plugin_policy_describe(pc_info_t *ret) {
    /* Exactly the hooks implemented below. */
    pc_describe(ret, "{{name}}", "0.1.0", PORTCULLIS_PLUGIN_TYPES_HOOKS_REQUEST);
}

static bool only_strings(pj_value key, pj_value value, void *ok) {
    (void)key;
    if (value.type != PJ_STRING) *(bool *)ok = false;
    return true;
}

static bool known_key(pj_value key, pj_value value, void *bad) {
    (void)value;
    if (!pj_string_eq(key, "required_labels")) *(pj_value *)bad = key;
    return true;
}

bool exports_portcullis_plugin_policy_init(plugin_string_t *config, plugin_string_t *err) {
    /* Own the text: the parsed values point into it. */
    config_text = (char *)config->ptr;
    pj_value cfg = config->len ? pj_parse(config_text, config->len) : pj_parse("{}", 2);
    if (cfg.type != PJ_OBJECT) return pc_config_error(err, "{{name}}: the configuration must be a table");
    pj_value bad = {PJ_MISSING, NULL, 0};
    pj_each(cfg, known_key, &bad);
    if (bad.type != PJ_MISSING) return pc_config_error(err, "{{name}}: unknown key %.*s", (int)bad.len - 2, bad.start + 1);
    required_labels = pj_get(cfg, "required_labels");
    bool ok = true;
    pj_each(required_labels, only_strings, &ok);
    if (required_labels.type != PJ_MISSING && (required_labels.type != PJ_ARRAY || !ok))
        return pc_config_error(err, "{{name}}: required_labels: expected a list of strings");
    return true;
}

struct label_check { pj_value labels; pj_value missing; };

static bool has_label(pj_value key, pj_value label, void *ctx) {
    (void)key;
    struct label_check *c = ctx;
    char *name = pj_string_dup(label);
    if (name && pj_get(c->labels, name).type == PJ_MISSING) c->missing = label;
    free(name);
    return c->missing.type == PJ_MISSING;
}

static void judge(pc_request_t *req, pc_verdict_t *ret) {
    if (!pc_eq(&req->endpoint, "container.create")) return pc_allow(ret);
    pj_value body = pc_body(req);
    pj_value privileged = pj_get(pj_get(body, "HostConfig"), "Privileged");
    if (privileged.type == PJ_BOOL && privileged.start[0] == 't')
        return pc_deny(ret, 403, "privileged containers are not allowed");
    struct label_check c = {pj_get(body, "Labels"), {PJ_MISSING, NULL, 0}};
    pj_each(required_labels, has_label, &c);
    if (c.missing.type != PJ_MISSING) {
        char *label = pj_string_dup(c.missing);
        pc_log(PORTCULLIS_PLUGIN_HOST_LEVEL_INFO, "%.*s created a container without %s", PC_STR(req->caller.user), label);
        pc_deny(ret, 403, "containers must have the label %s", label);
        free(label);
        return;
    }
    pc_allow(ret);
}

void exports_portcullis_plugin_policy_on_request(pc_request_t *req, pc_verdict_t *ret) {
    judge(req, ret);
    pc_request_free(req);
}

/* Not among the hooks describe() reports, so never called; required by the world. */
void exports_portcullis_plugin_policy_on_response(pc_request_t *req, pc_response_t *resp, pc_verdict_t *ret) {
    pc_request_free(req);
    portcullis_plugin_types_response_free(resp);
    pc_allow(ret);
}

void exports_portcullis_plugin_policy_on_audit(pc_request_t *req, plugin_string_t *record, pc_verdict_t *ret) {
    pc_request_free(req);
    plugin_string_free(record);
    pc_allow(ret);
}
