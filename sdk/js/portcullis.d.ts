// TypeScript types for portcullis.js (the JavaScript plugin helpers), mirroring
// sdk/wit/0.2.0/plugin.wit (portcullis:plugin@0.2.0).

export declare const CONTRACT_VERSION: string;

export interface Pair { name: string; value: string }

export interface Caller {
  user: string;
  groups: string[];
  auth: 'none' | 'peer-credentials' | 'mutual-tls' | 'token';
  peer: string;
}

export interface Target { kind: string; id: string; name?: string; labels: Record<string, string>; /** For a `tag`: its repository's owner by the gateway's record. */ owner?: string }

/** An object the request body refers to; `object` is undefined when the engine knows none. */
export interface Reference { field: string; kind: string; name: string; object?: Target }

export interface ContainerCreate {
  image: string;
  labels: Record<string, string>;
  privileged: boolean;
  raw: Record<string, unknown>;
}

export declare class Request {
  id: bigint;
  method: string;
  path: string;
  apiVersion?: string;
  endpoint: string;
  objectId?: string;
  queryPairs: Pair[];
  headerPairs: Pair[];
  body?: string;
  caller: Caller;
  target?: Target;
  related: Reference[];
  query(name: string): string | undefined;
  header(name: string): string | undefined;
  jsonBody(): unknown;
  targetLabel(key: string): string | undefined;
  containerCreate(): ContainerCreate | undefined;
}

export declare class Response {
  status: number;
  headerPairs: Pair[];
  body?: string;
  header(name: string): string | undefined;
  jsonBody(): unknown;
}

export type Edit = { tag: 'set'; val: Pair } | { tag: 'remove'; val: string };

export type Verdict =
  | { tag: 'allow' }
  | { tag: 'deny'; val: { status: number; message: string } }
  | { tag: 'patch'; val: { body?: string; headers: Edit[]; query: Edit[] } };

export declare function allow(): Verdict;
export declare function deny(message: string, status?: number): Verdict;

export declare class Patch {
  add(path: string, value: unknown): this;
  replace(path: string, value: unknown): this;
  remove(path: string): this;
  test(path: string, value: unknown): this;
  setHeader(name: string, value: string): this;
  removeHeader(name: string): this;
  setQuery(name: string, value: string): this;
  removeQuery(name: string): this;
}
export declare function patch(p: Patch): Verdict;
export declare function jsonPointer(...segments: string[]): string;

export declare class Plugin {
  static name: string;
  static version: string;
  config: Record<string, unknown>;
  constructor(config: Record<string, unknown>);
  onRequest(req: Request): Verdict;
  onResponse(req: Request, resp: Response): Verdict;
  onAudit(req: Request, record: Record<string, unknown>): Verdict;
}

export declare const log: {
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};
export declare function setLogger(fn: (level: string, message: string) => void): void;

export interface Policy {
  describe(): { name: string; version: string; hooks: { request: boolean; response: boolean; audit: boolean } };
  init(config: string): void;
  onRequest(request: unknown): Verdict;
  onResponse(request: unknown, response: unknown): Verdict;
  onAudit(request: unknown, record: string): Verdict;
}
export declare function exportPlugin(cls: typeof Plugin): Policy;
export declare function requestFromJson(text: string): Request;
export declare function verdictJson(v: Verdict): Record<string, unknown>;
