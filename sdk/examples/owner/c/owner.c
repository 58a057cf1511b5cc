/*
 * The owner policy in C, one of four identical implementations (Rust, Python, JavaScript, C)
 * in sdk/examples/owner/, all held to the table in tests/plugin-conformance/owner.json.
 *
 * On container.create it allows only images from the configured repositories and requires
 * an owner label. Configuration: repositories (required list), owner_label (default
 * com.example.owner). Build: sdk/c/build sdk/examples/owner/c owner.wasm
 */
#include <ctype.h>

#include "portcullis.h"

#define DEFAULT_LABEL "com.example.owner"

/* What init parsed; every call runs on a fresh instance, so these live for one call. */
static char **allowed;    /* as configured (for messages) */
static char **normalized; /* the same, normalized (for comparisons) */
static size_t n_allowed;
static char *label;

/* Whether the image is named by id (sha256:... or 64 hex digits), not by repository. */
static bool is_image_id(const char *image) {
    if (strncmp(image, "sha256:", 7) == 0) return true;
    if (strlen(image) != 64) return false;
    for (const char *p = image; *p; p++)
        if (!isxdigit((unsigned char)*p)) return false;
    return true;
}

/* A new string: a then b. */
static char *concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *out = malloc(la + lb + 1);
    memcpy(out, a, la);
    memcpy(out + la, b, lb + 1);
    return out;
}

/* The repository of an image reference, normalized as Docker does (no tag or digest,
 * docker.io and library/ filled in): busybox:1.36 -> docker.io/library/busybox. */
static char *repository(const char *image) {
    char *name = strndup(image, strcspn(image, "@"));
    char *colon = strrchr(name, ':');
    if (colon && !strchr(colon, '/')) *colon = 0;
    char *slash = strchr(name, '/');
    char *out = NULL;
    if (!slash) {
        out = concat("docker.io/library/", name);
    } else {
        size_t first = (size_t)(slash - name);
        bool registry = memchr(name, '.', first) || memchr(name, ':', first) ||
                        (first == 9 && !strncmp(name, "localhost", 9));
        if (!registry)
            out = concat("docker.io/", name);
        else if (first == 9 && !strncmp(name, "docker.io", 9) && !strchr(slash + 1, '/'))
            out = concat("docker.io/library/", slash + 1);
        else
            out = strdup(name);
    }
    free(name);
    return out;
}

void exports_portcullis_plugin_policy_describe(pc_info_t *ret) {
    pc_describe(ret, "owner-policy", "0.1.0", PORTCULLIS_PLUGIN_TYPES_HOOKS_REQUEST);
}

struct config_check { plugin_string_t *err; bool ok; };

static bool check_key(pj_value key, pj_value value, void *ctx) {
    struct config_check *c = ctx;
    (void)value;
    if (pj_string_eq(key, "repositories") || pj_string_eq(key, "owner_label")) return true;
    char *k = pj_string_dup(key);
    pc_config_error(c->err, "unknown key %s (expected repositories, owner_label)", k ? k : "?");
    free(k);
    c->ok = false;
    return false;
}

static bool add_repository(pj_value key, pj_value value, void *ctx) {
    (void)key;
    bool *ok = ctx;
    if (value.type != PJ_STRING || pj_string_len(value) == 0) return *ok = false;
    allowed[n_allowed] = pj_string_dup(value);
    normalized[n_allowed] = repository(allowed[n_allowed]);
    n_allowed++;
    return true;
}

static bool count_one(pj_value k, pj_value v, void *ctx) {
    (void)k; (void)v;
    ++*(size_t *)ctx;
    return true;
}

bool exports_portcullis_plugin_policy_init(plugin_string_t *config, plugin_string_t *err) {
    pj_value cfg = config->len ? pc_json(config) : pj_parse("{}", 2);
    bool ok = true;
    if (cfg.type == PJ_NULL) cfg = pj_parse("{}", 2);
    if (cfg.type != PJ_OBJECT) ok = pc_config_error(err, "the configuration must be a table");
    struct config_check check = {err, true};
    if (ok) pj_each(cfg, check_key, &check);
    ok = ok && check.ok;
    if (ok) {
        pj_value repos = pj_get(cfg, "repositories");
        size_t n = 0;
        pj_each(repos, count_one, &n);
        if (repos.type == PJ_ARRAY && n > 0) {
            allowed = calloc(n, sizeof *allowed);
            normalized = calloc(n, sizeof *normalized);
            pj_each(repos, add_repository, &ok);
        } else {
            ok = false;
        }
        if (!ok) pc_config_error(err, "repositories: expected a non-empty list of image repositories");
    }
    if (ok) {
        pj_value l = pj_get(cfg, "owner_label");
        if (l.type == PJ_MISSING)
            label = strdup(DEFAULT_LABEL);
        else if (l.type == PJ_STRING && pj_string_len(l) > 0)
            label = pj_string_dup(l);
        else
            ok = pc_config_error(err, "owner_label: expected a non-empty string");
    }
    plugin_string_free(config);
    return ok;
}

static void judge(pc_request_t *req, pc_verdict_t *ret) {
    if (!pc_eq(&req->endpoint, "container.create")) return pc_allow(ret);
    pj_value body = pc_body(req);
    if (body.type != PJ_OBJECT)
        return pc_deny(ret, 400, "container.create: the request body is not a JSON object");
    pj_value image_v = pj_get(body, "Image");
    if (image_v.type != PJ_STRING || pj_string_len(image_v) == 0)
        return pc_deny(ret, 403, "containers must name an image");
    char *image = pj_string_dup(image_v);
    if (is_image_id(image)) {
        pc_deny(ret, 403, "image %s must be named by repository, not by id", image);
        free(image);
        return;
    }
    char *repo = repository(image);
    bool found = false;
    for (size_t i = 0; i < n_allowed && !found; i++) found = strcmp(repo, normalized[i]) == 0;
    free(repo);
    if (!found) {
        size_t len = 1;
        for (size_t i = 0; i < n_allowed; i++) len += strlen(allowed[i]) + 2;
        char *list = calloc(1, len);
        for (size_t i = 0; i < n_allowed; i++) {
            if (i) strcat(list, ", ");
            strcat(list, allowed[i]);
        }
        pc_deny(ret, 403, "image %s is not from an allowed repository (allowed: %s)", image, list);
        free(list);
        free(image);
        return;
    }
    free(image);
    pj_value owner = pj_get(pj_get(body, "Labels"), label);
    if (owner.type != PJ_STRING || pj_string_len(owner) == 0) {
        pc_log(PORTCULLIS_PLUGIN_HOST_LEVEL_INFO, "%.*s created a container without %s", PC_STR(req->caller.user), label);
        return pc_deny(ret, 403, "containers must carry the label %s (docker create --label %s=NAME)", label, label);
    }
    pc_allow(ret);
}

void exports_portcullis_plugin_policy_on_request(pc_request_t *req, pc_verdict_t *ret) {
    judge(req, ret);
    pc_request_free(req);
}

/* Not in the hooks describe() reports, so never called; required by the world. */
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
