import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Puts the test double on disk as two real executables, `jailer` and
// `firecracker`: tiny sh scripts with absolute paths to node and to the .mjs
// programs, so they still work after the jailer copies `firecracker` into a
// chroot. The backend runs them exactly as it would run the real binaries.
//
// To run the same tests against the real binaries on a KVM host, see
// docs/firecracker.md (FC_REAL_JAILER, FC_REAL_FIRECRACKER, FC_REAL_KERNEL, FC_REAL_ROOTFS).

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const SPEC_FILE = path.resolve(HERE, '../../fixtures/firecracker/firecracker-api-v1.16.1.yaml');

export interface Double {
  jailerPath: string;
  firecrackerPath: string;
  logDir: string;
  cgroupRoot: string;
  /** Variables the double reads (set them in process.env before the backend runs the jailer). */
  env: Record<string, string>;
  /** Every request the fake firecracker of `vmId` received, in order. */
  requests(vmId: string): DoubleRequest[];
  /** Every jailer invocation (argv and outcome), in order. */
  jailerRuns(): JailerRun[];
  /** What the fake firecracker of `vmId` was started with. */
  vmm(vmId: string): { argv: string[]; uid: number; gid: number; seccomp: boolean; pid: number; cwd: string };
}

export interface JailerRun {
  argv: string[];
  ok: boolean;
  error?: string;
  pid?: number;
  chroot?: string;
  cgroupDir?: string;
  /** cgroup files and the values the jailer wrote to them. */
  cgroupValues?: Record<string, string>;
}

export interface DoubleRequest {
  method: string;
  path: string;
  body?: unknown;
  status: number;
  fault?: string;
  state: string;
}

function jsonLines<T>(file: string): T[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as T);
}

export function installDouble(dir: string): Double {
  const bin = path.join(dir, 'bin');
  const logDir = path.join(dir, 'log');
  const cgroupRoot = path.join(dir, 'cgroup2');
  mkdirSync(bin, { recursive: true });
  mkdirSync(logDir, { recursive: true, mode: 0o777 });
  chmodSync(logDir, 0o777); // the fake firecracker logs as the jail user
  mkdirSync(cgroupRoot, { recursive: true });
  // A stand-in cgroup2 root offering the controllers this host keeps in cgroup v1.
  writeFileSync(path.join(cgroupRoot, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids\n');
  const wrapper = (script: string) => `#!/bin/sh\nexec ${process.execPath} ${path.join(HERE, script)} "$@"\n`;
  const jailerPath = path.join(bin, 'jailer');
  const firecrackerPath = path.join(bin, 'firecracker');
  writeFileSync(jailerPath, wrapper('jailer.mjs'), { mode: 0o755 });
  writeFileSync(firecrackerPath, wrapper('firecracker.mjs'), { mode: 0o755 });
  return {
    jailerPath,
    firecrackerPath,
    logDir,
    cgroupRoot,
    env: { FC_DOUBLE_LOG_DIR: logDir, FC_DOUBLE_CGROUP_ROOT: cgroupRoot, FC_DOUBLE_SPEC: SPEC_FILE },
    requests: (vmId) => jsonLines<DoubleRequest>(path.join(logDir, `${vmId}.requests.jsonl`)),
    jailerRuns: () => jsonLines(path.join(logDir, 'jailer.jsonl')),
    vmm: (vmId) => JSON.parse(readFileSync(path.join(logDir, `${vmId}.firecracker.json`), 'utf8')),
  };
}
