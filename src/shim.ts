// shim.ts - where the preload shim (libjdlsshim.so, built from shim/ by
// binding.gyp) lives. Owns: its path only; the shim itself is C (docs/shim.md).
import path from 'node:path';
import { buildDir } from './native.js';

/** Absolute path of build/Release/libjdlsshim.so: LD_PRELOAD=$(jdls --shim-path). */
export function shimPath(): string {
  return path.join(buildDir, 'libjdlsshim.so');
}
