// protocol-doc.mjs - what `npm run docs:protocol` runs (after tsc): rewrites
// the generated worked examples of docs/protocol.md (the blocks between the
// "frame-example(s): begin/end" markers) from test/fixtures/protocol-vectors.json.
// The rendering lives in test/helpers/frame-examples.ts, compiled to dist/,
// because test/protocol-doc.test.ts renders the same text to check the
// document.
import fs from 'node:fs';
import { docPath, updateDoc } from '../dist/test/helpers/frame-examples.js';

const doc = fs.readFileSync(docPath, 'utf8');
const next = updateDoc(doc);
if (next === doc) {
  console.log(`${docPath}: examples up to date`);
} else {
  fs.writeFileSync(docPath, next);
  console.log(`${docPath}: examples rewritten`);
}
