// Write portcullis gateway plugins in JavaScript.
//
// A plugin is a WebAssembly component built with @bytecodealliance/componentize-js from the
// WIT contract in sdk/wit/0.2.0/plugin.wit (portcullis:plugin@0.2.0). This module wraps the
// generated bindings: extend `Plugin`, override the hooks you need, and export it:
//
//   import { Plugin, allow, deny, exportPlugin } from './portcullis.js';
//
//   class NoPrivileged extends Plugin {
//     static name = 'no-privileged';
//     onRequest(req) {
//       const c = req.containerCreate();
//       return c && c.privileged ? deny('privileged containers are not allowed') : allow();
//     }
//   }
//   export const policy = exportPlugin(NoPrivileged);
//
// Every request runs on a fresh instance: `init` builds your class from its configuration,
// then the hook runs. A request's `onResponse` usually runs in the instance its `onRequest`
// ran in, but may get a fresh one; nothing survives from one request to the next.
//
// The module has no import of the host at its top level, so a plugin's logic can be
// unit-tested with plain `node` too (see `requestFromJson` and `verdictJson`).

/** The contract version this module speaks. */
export const CONTRACT_VERSION = '0.2.0';

function first(pairs, name) {
  const p = pairs.find((p) => p.name === name);
  return p === undefined ? undefined : p.value;
}

function parseJson(text) {
  if (text === undefined || text === null) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A request exactly as the engine will act on it. */
export class Request {
  constructor(r) {
    /** The gateway's id for this request (a BigInt). */
    this.id = r.id ?? 0n;
    /** The HTTP method, uppercase. */
    this.method = r.method ?? 'GET';
    /** The canonical path without the version prefix. */
    this.path = r.path ?? '/';
    /** The API version from the path prefix, if any. */
    this.apiVersion = r.apiVersion;
    /** The endpoint name, e.g. `container.create`. */
    this.endpoint = r.endpoint ?? '';
    /** The id or name of the object in the path, if any. */
    this.objectId = r.objectId;
    /** Query parameters, `[{name, value}]`, decoded, in order. */
    this.queryPairs = r.query ?? [];
    /** Headers, `[{name, value}]`, names lowercase, credentials removed unless granted. */
    this.headerPairs = r.headers ?? [];
    /** The body as canonical JSON text, for endpoints that take JSON. */
    this.body = r.body;
    /** `{user, groups, auth, peer}`; `auth` is `none`, `peer-credentials`, `mutual-tls` or `token`. */
    this.caller = r.caller ?? { user: '', groups: [], auth: 'none', peer: '' };
    /** `{kind, id, name, labels: {key: value}}` for requests on an existing object. */
    const object = (t) => (t ? { ...t, labels: Object.fromEntries(t.labels.map((p) => [p.name, p.value])) } : undefined);
    this.target = object(r.target);
    /** `[{field, kind, name, object}]`: the other objects the body refers to (`object` undefined when none exists). */
    this.related = (r.related ?? []).map((x) => ({ ...x, object: object(x.object) }));
  }

  /** The first value of query parameter `name`. */
  query(name) {
    return first(this.queryPairs, name);
  }

  /** The first value of header `name` (case-insensitive). */
  header(name) {
    return first(this.headerPairs, name.toLowerCase());
  }

  /** The body parsed as JSON; `undefined` when there is none or it is not JSON. */
  jsonBody() {
    return parseJson(this.body);
  }

  /** The value of label `key` on the target object, if any. */
  targetLabel(key) {
    return this.target ? this.target.labels[key] : undefined;
  }

  /**
   * The fields of a `container.create` body policies usually need (`image`, `labels`,
   * `privileged`) plus `raw`; `undefined` for other endpoints or a body that is not an object.
   */
  containerCreate() {
    if (this.endpoint !== 'container.create') return undefined;
    const body = this.jsonBody();
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return undefined;
    const labels = {};
    if (body.Labels && typeof body.Labels === 'object' && !Array.isArray(body.Labels)) {
      for (const [k, v] of Object.entries(body.Labels)) if (typeof v === 'string') labels[k] = v;
    }
    return {
      image: typeof body.Image === 'string' ? body.Image : '',
      labels,
      privileged: !!(body.HostConfig && body.HostConfig.Privileged === true),
      raw: body,
    };
  }
}

/** The engine's answer. */
export class Response {
  constructor(r) {
    this.status = r.status ?? 200;
    this.headerPairs = r.headers ?? [];
    this.body = r.body;
  }
  header(name) {
    return first(this.headerPairs, name.toLowerCase());
  }
  jsonBody() {
    return parseJson(this.body);
  }
}

/** Let it pass unchanged. */
export function allow() {
  return { tag: 'allow' };
}

/** Refuse it; the docker CLI shows `Error response from daemon: <plugin>: <message>`. */
export function deny(message, status = 403) {
  return { tag: 'deny', val: { status, message: String(message) } };
}

/** An RFC 6902 JSON Patch on the body plus header and query edits, built fluently. */
export class Patch {
  constructor() {
    this.ops = [];
    this.headers = [];
    this.query = [];
  }
  add(path, value) { this.ops.push({ op: 'add', path, value }); return this; }
  replace(path, value) { this.ops.push({ op: 'replace', path, value }); return this; }
  remove(path) { this.ops.push({ op: 'remove', path }); return this; }
  test(path, value) { this.ops.push({ op: 'test', path, value }); return this; }
  setHeader(name, value) { this.headers.push({ tag: 'set', val: { name, value } }); return this; }
  removeHeader(name) { this.headers.push({ tag: 'remove', val: name }); return this; }
  setQuery(name, value) { this.query.push({ tag: 'set', val: { name, value } }); return this; }
  removeQuery(name) { this.query.push({ tag: 'remove', val: name }); return this; }
}

/** Let it pass with these changes (request patches need `phase = "mutate"`). */
export function patch(p) {
  return {
    tag: 'patch',
    val: { body: p.ops.length ? JSON.stringify(p.ops) : undefined, headers: p.headers, query: p.query },
  };
}

/** A JSON Pointer from raw segments: `jsonPointer('Labels', 'a/b')` is `/Labels/a~1b`. */
export function jsonPointer(...segments) {
  return segments.map((s) => '/' + String(s).replaceAll('~', '~0').replaceAll('/', '~1')).join('');
}

/**
 * Extend it. The constructor receives the `config` table (an object, `{}` when there is
 * none): throw an Error with a clear message to refuse it, and the gateway does not start.
 * Override the hooks you implement; the hooks reported to the gateway are exactly those.
 */
export class Plugin {
  static name = 'plugin';
  static version = '0.1.0';
  constructor(config) {
    this.config = config;
  }
  onRequest(_req) { return allow(); }
  onResponse(_req, _resp) { return allow(); }
  onAudit(_req, _record) { return allow(); }
}

let hostLog;

/** Sets the function log lines go to (`exportPlugin` wires the host's `log`). */
export function setLogger(fn) {
  hostLog = fn;
}

function write(level, message) {
  if (hostLog) hostLog(level, String(message));
  else console.error(`[${level}] ${message}`);
}

/** Lines in the gateway's log, tagged with the plugin's name and the request id. */
export const log = {
  trace: (m) => write('trace', m),
  debug: (m) => write('debug', m),
  info: (m) => write('info', m),
  warn: (m) => write('warn', m),
  error: (m) => write('error', m),
};

function checked(v) {
  if (!v || !['allow', 'deny', 'patch'].includes(v.tag)) {
    throw new TypeError(`a hook must return allow(), deny(..) or patch(..), not ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * The object componentize-js exports as `portcullis:plugin/policy`: `export const policy =
 * exportPlugin(MyPlugin)` in the plugin's main module.
 */
export function exportPlugin(cls) {
  let current;
  const overrides = (m) => cls.prototype[m] !== Plugin.prototype[m];
  return {
    describe() {
      return {
        name: cls.name,
        version: cls.version,
        hooks: { request: overrides('onRequest'), response: overrides('onResponse'), audit: overrides('onAudit') },
      };
    },
    init(config) {
      let parsed;
      try {
        parsed = config.trim() ? JSON.parse(config) : {};
      } catch (e) {
        throw `the plugin configuration is not valid JSON: ${e.message}`;
      }
      try {
        current = new cls(parsed ?? {});
      } catch (e) {
        // A thrown string is the `err` of init's result.
        throw e instanceof Error ? e.message : String(e);
      }
    },
    onRequest(request) {
      return checked(current.onRequest(new Request(request)));
    },
    onResponse(request, response) {
      return checked(current.onResponse(new Request(request), new Response(response)));
    },
    onAudit(request, record) {
      return checked(current.onAudit(new Request(request), JSON.parse(record)));
    },
  };
}

/**
 * A Request from the request file format of `portcullis plugin test` (every field optional;
 * `body` a JSON value or JSON text; the endpoint must be given), for unit tests under node.
 */
export function requestFromJson(text) {
  const d = JSON.parse(text);
  const pairs = (items) => (items ?? []).map((p) => (Array.isArray(p) ? { name: p[0], value: p[1] } : p));
  const object = (t) => (t ? { ...t, labels: Object.entries(t.labels ?? {}).map(([name, value]) => ({ name, value })) } : undefined);
  return new Request({
    id: BigInt(d.id ?? 0),
    method: d.method,
    path: d.path,
    apiVersion: d.api_version ?? undefined,
    endpoint: d.endpoint,
    objectId: d.object_id ?? undefined,
    query: pairs(d.query),
    headers: pairs(d.headers),
    body: d.body === undefined || d.body === null || typeof d.body === 'string' ? d.body ?? undefined : JSON.stringify(d.body),
    caller: { user: 'test', groups: [], auth: 'none', peer: 'test', ...(d.caller ?? {}) },
    target: object(d.target),
    related: (d.related ?? []).map((x) => ({ ...x, object: object(x.object) })),
  });
}

/** A verdict as `portcullis plugin test` prints it. */
export function verdictJson(v) {
  if (v.tag === 'allow') return { verdict: 'allow' };
  if (v.tag === 'deny') return { verdict: 'deny', status: v.val.status, message: v.val.message };
  const edits = (es) => es.map((e) => (e.tag === 'set' ? { set: [e.val.name, e.val.value] } : { remove: e.val }));
  return {
    verdict: 'patch',
    body: v.val.body === undefined ? null : JSON.parse(v.val.body),
    headers: edits(v.val.headers),
    query: edits(v.val.query),
  };
}
