// link-bin.mjs - make `npx jdls` work inside a checkout of jdls itself.
//
// npm links a package's `bin` into node_modules/.bin of the projects that
// depend on it, but never the root project's own bin, so in a checkout
// `npx jdls` would fail with "jdls: not found". Runs from `prepare`, after tsc.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = path.join(root, 'dist', 'src', 'cli', 'jdls.js');
const binDir = path.join(root, 'node_modules', '.bin');
if (!fs.existsSync(target)) {
  console.error(`link-bin: ${target} is missing (did tsc run?)`);
  process.exit(1);
}
fs.chmodSync(target, 0o755);
if (fs.existsSync(path.join(root, 'node_modules'))) {
  fs.mkdirSync(binDir, { recursive: true });
  const link = path.join(binDir, 'jdls');
  fs.rmSync(link, { force: true });
  fs.symlinkSync(path.relative(binDir, target), link);
}
