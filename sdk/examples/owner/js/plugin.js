// The owner policy in JavaScript, one of four identical implementations (Rust, Python,
// JavaScript, C) in sdk/examples/owner/, all held to the table in
// tests/plugin-conformance/owner.json.
//
// On container.create it allows only images from the configured repositories and requires
// an owner label. Configuration: repositories (required list), owner_label (default
// com.example.owner).

import { Plugin, allow, deny, exportPlugin, log } from './portcullis.js';

const DEFAULT_LABEL = 'com.example.owner';

/** Whether the image is named by id (sha256:... or 64 hex digits), not by repository. */
export function isImageId(image) {
  return image.startsWith('sha256:') || /^[0-9a-fA-F]{64}$/.test(image);
}

/**
 * The repository of an image reference, normalized as Docker does (no tag or digest,
 * docker.io and library/ filled in): busybox:1.36 -> docker.io/library/busybox.
 */
export function repository(image) {
  let name = image.split('@')[0];
  const colon = name.lastIndexOf(':');
  if (colon >= 0 && !name.slice(colon).includes('/')) name = name.slice(0, colon);
  const slash = name.indexOf('/');
  if (slash < 0) return 'docker.io/library/' + name;
  const first = name.slice(0, slash);
  const rest = name.slice(slash + 1);
  if (first.includes('.') || first.includes(':') || first === 'localhost') {
    return first === 'docker.io' && !rest.includes('/') ? 'docker.io/library/' + rest : name;
  }
  return 'docker.io/' + name;
}

export class Owner extends Plugin {
  static name = 'owner-policy';
  static version = '0.1.0';

  constructor(config) {
    super(config);
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new Error('the configuration must be a table');
    }
    for (const key of Object.keys(config)) {
      if (key !== 'repositories' && key !== 'owner_label') {
        throw new Error(`unknown key ${key} (expected repositories, owner_label)`);
      }
    }
    const repos = config.repositories;
    if (!Array.isArray(repos) || repos.length === 0 || !repos.every((r) => typeof r === 'string' && r)) {
      throw new Error('repositories: expected a non-empty list of image repositories');
    }
    const label = config.owner_label ?? DEFAULT_LABEL;
    if (typeof label !== 'string' || !label) throw new Error('owner_label: expected a non-empty string');
    this.allowed = repos;
    this.normalized = new Set(repos.map(repository));
    this.label = label;
  }

  onRequest(req) {
    if (req.endpoint !== 'container.create') return allow();
    const body = req.jsonBody();
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return deny('container.create: the request body is not a JSON object', 400);
    }
    const image = body.Image;
    if (typeof image !== 'string' || !image) return deny('containers must name an image');
    if (isImageId(image)) return deny(`image ${image} must be named by repository, not by id`);
    if (!this.normalized.has(repository(image))) {
      return deny(`image ${image} is not from an allowed repository (allowed: ${this.allowed.join(', ')})`);
    }
    const labels = body.Labels;
    const owner =
      labels !== null && typeof labels === 'object' && !Array.isArray(labels) && Object.hasOwn(labels, this.label)
        ? labels[this.label]
        : undefined;
    if (typeof owner !== 'string' || !owner) {
      log.info(`${req.caller.user} created a container without ${this.label}`);
      return deny(`containers must carry the label ${this.label} (docker create --label ${this.label}=NAME)`);
    }
    return allow();
  }
}

export const policy = exportPlugin(Owner);
