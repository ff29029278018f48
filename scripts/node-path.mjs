// node-path.mjs - run after the native build: writes the path of the Node
// that built the package into build/Release/jdls-node, next to
// libjdlsshim.so. The shim starts the broker with it (docs/broker.md), so a
// preloaded program does not depend on `node` being on its PATH; $JDLS_NODE
// overrides it.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, 'build', 'Release');
if (fs.existsSync(dir)) fs.writeFileSync(path.join(dir, 'jdls-node'), `${process.execPath}\n`);
