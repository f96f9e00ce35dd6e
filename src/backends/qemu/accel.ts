import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { run } from '../../kernel/exec.js';
import type { Accel } from './argv.js';

// KVM where it works, else TCG. /dev/kvm being there is not enough: on a
// host whose KVM is PVM-only, qemu opens it, but a normal guest kernel then
// hangs at protected-mode entry (docs/decisions/0023). So `auto` boots the
// guest image once with KVM and a kernel argument that makes guest/init
// print METALD-PROBE-OK and power off; under a working KVM that takes well
// under a second.

export type AccelMode = 'auto' | 'kvm' | 'tcg';

export interface ProbeImage {
  binary: string;
  kernel: string;
  initrd: string;
  machine: string;
  tscKhz: number | undefined;
}

const PROBE_TIMEOUT_MS = 5_000;

export async function kvmUsable(img: ProbeImage, timeoutMs = PROBE_TIMEOUT_MS): Promise<{ ok: boolean; detail: string }> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { ok: false, detail: '/dev/kvm is not accessible' };
  }
  const append = ['console=ttyS0', 'quiet', 'panic=-1', 'metald.probe=1', ...(img.tscKhz ? [`tsc_early_khz=${img.tscKhz}`] : [])].join(' ');
  try {
    const out = await run(img.binary, [
      '-machine', img.machine, '-accel', 'kvm', '-m', '128', '-smp', '1', '-nodefaults', '-no-user-config',
      '-display', 'none', '-no-reboot', '-serial', 'stdio', '-kernel', img.kernel,
      ...(img.initrd ? ['-initrd', img.initrd] : []), '-append', append,
    ], { timeoutMs });
    return out.includes('METALD-PROBE-OK') ? { ok: true, detail: 'probe boot under KVM worked' } : { ok: false, detail: 'probe boot under KVM printed no METALD-PROBE-OK' };
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err);
    return { ok: false, detail: `probe boot under KVM failed or hung: ${msg.slice(0, 300)}` };
  }
}

/** Chooses the accelerator once per backend (the probe costs up to 5 s). */
export async function chooseAccel(mode: AccelMode, img: ProbeImage): Promise<{ accel: Accel; detail: string }> {
  if (mode !== 'auto') return { accel: mode, detail: `configured (qemu.accel: ${mode})` };
  const kvm = await kvmUsable(img);
  return { accel: kvm.ok ? 'kvm' : 'tcg', detail: kvm.detail };
}
