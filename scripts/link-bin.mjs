// link-bin.mjs - make `npx jdls` (and every other `bin` of package.json:
// `jDLS`, the utilities) work inside a checkout of jdls itself.
//
// npm links a package's `bin` into node_modules/.bin of the projects that
// depend on it, but never the root project's own bin, so in a checkout
// `npx jdls` would fail with "jdls: not found". Runs from `prepare`, after tsc.
// Reads the names from package.json so that a new bin needs no edit here.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const bins = typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : pkg.bin ?? {};
const binDir = path.join(root, 'node_modules', '.bin');
let failed = false;
for (const [name, rel] of Object.entries(bins)) {
  const target = path.join(root, rel);
  if (!fs.existsSync(target)) {
    console.error(`link-bin: ${target} (bin ${name}) is missing (did tsc run?)`);
    failed = true;
    continue;
  }
  fs.chmodSync(target, 0o755);
  if (fs.existsSync(path.join(root, 'node_modules'))) {
    fs.mkdirSync(binDir, { recursive: true });
    const link = path.join(binDir, name);
    fs.rmSync(link, { force: true });
    fs.symlinkSync(path.relative(binDir, target), link);
  }
}
if (failed) process.exit(1);
