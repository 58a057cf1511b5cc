// {{name}}: a portcullis plugin.
//
// Denies containers that are privileged or that lack the labels the configuration requires.
// Configuration (the plugin's `config` table in the gateway configuration):
//
//   required_labels = ["com.example.owner"]
//
// Build: ./build.sh (componentize-js) -> {{name}}.wasm. Test: ./test.sh.

import { Plugin, allow, deny, exportPlugin, log } from './portcullis.js';

export class MyPlugin extends Plugin {
  static name = '{{name}}';
  static version = '0.1.0';

  constructor(config) {
    super(config);
    // Throw to refuse a configuration: the gateway then does not start.
    for (const key of Object.keys(config)) {
      if (key !== 'required_labels') throw new Error(`{{name}}: unknown key ${key}`);
    }
    const labels = config.required_labels ?? [];
    if (!Array.isArray(labels) || !labels.every((l) => typeof l === 'string')) {
      throw new Error('{{name}}: required_labels: expected a list of strings');
    }
    this.requiredLabels = labels;
  }

  // Only the hooks overridden here are called by the gateway.
  onRequest(req) {
    const create = req.containerCreate();
    if (!create) return allow();
    if (create.privileged) return deny('privileged containers are not allowed');
    for (const label of this.requiredLabels) {
      if (!(label in create.labels)) {
        log.info(`${req.caller.user} created a container without ${label}`);
        return deny(`containers must have the label ${label}`);
      }
    }
    return allow();
  }
}

// componentize-js exports `policy` as portcullis:plugin/policy.
export const policy = exportPlugin(MyPlugin);
