// shim.ts - scenario: the preload shim's costs (issue 5), in interleaved
// rounds, medians over rounds, all from C (build/Release/jdls-shimbench):
//   - direct: a C-API record lock+unlock through the shim in-process (no
//     JDLS, monitor running: the shm table) vs a raw fcntl F_SETLK pair
//     without the shim; goal <= 0.15x;
//   - redirected: an fcntl lock+unlock pair on a jlock file through the shim
//     with JDLS (shim -> broker -> lock server on loopback; two requests)
//     vs one 40-byte TCP echo round trip from C; goal <= 3x;
//   - non-lock fcntl (F_GETFL) with the shim vs without; goal within 5 %.
// The service and its broker run in a temporary installation, removed after.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDir } from '../src/native.js';
import { shimPath } from '../src/shim.js';
import { Service } from './remote.js';
import { median, runJson, type Figure } from './lib.js';

const shimbench = path.join(buildDir, 'jdls-shimbench');
const remoteJs = path.join(path.dirname(fileURLToPath(import.meta.url)), 'remote.js');

export interface ShimResult {
  rounds: number;
  directNs: number[];
  fcntlNs: number[];
  redirectedNs: number[];
  echoNs: number[];
  getflNs: number[];
  getflShimNs: number[];
}

export interface ShimOptions {
  rounds?: number;
  localIterations?: number;
  remoteIterations?: number;
}

function echoServer(): Promise<{ port: number; stop: () => void }> {
  const child = spawn(process.execPath, [remoteJs, '--echo'], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /^PORT (\d+)$/m.exec(buf);
      if (m) resolve({ port: Number(m[1]), stop: () => child.stdin.end() });
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`echo server exited ${code}`)));
  });
}

export async function runShim(opts: ShimOptions = {}): Promise<{ result: ShimResult; figures: Figure[] }> {
  const rounds = opts.rounds ?? 5;
  const local = String(opts.localIterations ?? 200_000);
  const remote = String(opts.remoteIterations ?? 2_000);
  const svc = new Service('shim', {});
  const echo = await echoServer();
  const lockDir = path.join(svc.inst.dir, 'jbase');
  fs.mkdirSync(lockDir, { recursive: true });
  const plain = path.join(svc.inst.dir, 'plain.lock');
  const jlock = path.join(lockDir, 'jlock_00001092_ffffffff');
  const base = { ...svc.env, JDLS_LOCKDIR: lockDir };
  const pre = { ...base, LD_PRELOAD: shimPath() };
  const jdls = { ...pre, JDLS: `SERVER=127.0.0.1,${svc.port}` };
  const run = (args: string[], env: NodeJS.ProcessEnv, what: string): number => runJson<{ nsPer: number }>(shimbench, args, what, { env }).nsPer;
  const r: ShimResult = { rounds, directNs: [], fcntlNs: [], redirectedNs: [], echoNs: [], getflNs: [], getflShimNs: [] };
  try {
    run(['fcntl', jlock, '100'], jdls, 'warm-up: start the broker');
    for (let i = 0; i < rounds; i++) {
      r.directNs.push(run(['api', local], pre, 'C API through the shim'));
      r.fcntlNs.push(run(['fcntl', plain, local], base, 'fcntl pair'));
      r.redirectedNs.push(run(['fcntl', jlock, remote], jdls, 'redirected fcntl pair'));
      r.echoNs.push(run(['echo', String(echo.port), remote], base, 'echo'));
      r.getflNs.push(run(['getfl', plain, local], base, 'F_GETFL'));
      r.getflShimNs.push(run(['getfl', plain, local], pre, 'F_GETFL with the shim'));
    }
  } finally {
    echo.stop();
    try {
      const pid = Number(fs.readFileSync(path.join(svc.inst.dir, 'tmp', 'jdls-broker.sock.pid'), 'utf8'));
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      /* none, or gone */
    }
    svc.stop();
  }
  const direct = median(r.directNs);
  const fcntl = median(r.fcntlNs);
  const redirected = median(r.redirectedNs);
  const echoNs = median(r.echoNs);
  const getfl = median(r.getflNs);
  const getflShim = median(r.getflShimNs);
  const x = (v: number): number => Math.round(v * 100) / 100;
  const figures: Figure[] = [
    { id: 'shim.direct', label: 'shim: C-API lock+unlock in-process (table)', value: Math.round(direct), unit: 'ns' },
    { id: 'shim.direct.ratio', label: 'shim: C-API pair / raw fcntl pair', value: x(direct / fcntl), unit: 'x', goal: '<= 0.15', pass: direct / fcntl <= 0.15, note: `fcntl pair ${Math.round(fcntl)} ns` },
    { id: 'shim.redirected', label: 'shim: fcntl pair via broker + server', value: Math.round(redirected / 1000), unit: 'us' },
    { id: 'shim.redirected.ratio', label: 'shim: redirected pair / echo RTT', value: x(redirected / echoNs), unit: 'x', goal: '<= 3', pass: redirected / echoNs <= 3, note: `echo ${Math.round(echoNs / 1000)} us` },
    { id: 'shim.getfl.ratio', label: 'shim: F_GETFL with / without the shim', value: x(getflShim / getfl), unit: 'x', goal: '<= 1.05', pass: getflShim / getfl <= 1.05, note: `${getfl.toFixed(1)} ns without` },
  ];
  return { result: r, figures };
}
