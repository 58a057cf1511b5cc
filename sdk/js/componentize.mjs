#!/usr/bin/env node
// Builds a JavaScript plugin into a component with @bytecodealliance/componentize-js, through
// its componentize() API (the `jco componentize` CLI mishandles relative paths).
//
//   node componentize.mjs --wit DIR --out PLUGIN.wasm plugin.js
//
// componentize-js is looked up in $PORTCULLIS_NPM_DIR (default /var/cache/portcullis/npm,
// where scripts/install-plugin-toolchains puts it), then in the usual node_modules.
//
// The component's entry is a small generated module beside plugin.js that wires the host's
// `log` import into portcullis.js and re-exports the plugin: the plugin module itself imports
// nothing from the host, so its logic also runs under plain `node` for unit tests.

import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

function usage(msg) {
  console.error(`componentize.mjs: ${msg}\nusage: node componentize.mjs --wit DIR --out PLUGIN.wasm plugin.js`);
  process.exit(2);
}

const args = process.argv.slice(2);
let wit, out, src;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--wit') wit = args[++i];
  else if (args[i] === '--out') out = args[++i];
  else if (!src) src = args[i];
  else usage(`unexpected argument ${args[i]}`);
}
if (!wit || !out || !src) usage('missing arguments');

async function loadComponentize() {
  const dir = process.env.PORTCULLIS_NPM_DIR || '/var/cache/portcullis/npm';
  const local = join(dir, 'node_modules/@bytecodealliance/componentize-js/src/componentize.js');
  if (existsSync(local)) return (await import(pathToFileURL(local).href)).componentize;
  try {
    return (await import('@bytecodealliance/componentize-js')).componentize;
  } catch {
    console.error(`componentize.mjs: @bytecodealliance/componentize-js is not installed in ${dir}: run scripts/install-plugin-toolchains js`);
    process.exit(1);
  }
}

const componentize = await loadComponentize();
const source = resolve(src);
// componentize-js resolves imports only inside the entry's directory, so the plugin's files
// are staged in a temporary directory with portcullis.js beside them: the plugin's own copy
// when it has one, else this SDK's. Plugins import it as './portcullis.js'.
const stage = await mkdtemp(join(tmpdir(), 'portcullis-js-'));
for (const f of await readdir(dirname(source))) {
  if (/\.(m?js|json)$/.test(f) && !f.startsWith('.')) await cp(join(dirname(source), f), join(stage, f));
}
if (!existsSync(join(stage, 'portcullis.js'))) {
  await cp(join(dirname(fileURLToPath(import.meta.url)), 'portcullis.js'), join(stage, 'portcullis.js'));
}
const entry = join(stage, 'portcullis-entry.mjs');
await writeFile(
  entry,
  `import { log } from 'portcullis:plugin/host@0.2.0';\n` +
    `import { setLogger } from './portcullis.js';\n` +
    `setLogger(log);\n` +
    `export * from './${basename(source)}';\n`,
);
try {
  const { component } = await componentize({
    sourcePath: entry,
    witPath: resolve(wit),
    worldName: 'plugin',
    // No outbound HTTP and no fetch event: a policy gets neither. stdio stays, so an
    // exception's message reaches the gateway's log; clocks stay (frozen unless granted).
    disableFeatures: ['http', 'fetch-event'],
  });
  await writeFile(out, component);
  console.error(`componentize.mjs: wrote ${out} (${component.length} bytes)`);
} finally {
  await rm(stage, { recursive: true, force: true });
}
