import type { MetaldConfig } from '../../config/schema.js';
import { FirecrackerBackend } from './firecracker-backend.js';

/** The backend as the config describes it (kept here so the daemon's wiring stays one line). */
export function firecrackerFromConfig(
  cfg: MetaldConfig,
  log?: { info(o: object, msg: string): void; warn(o: object, msg: string): void },
): FirecrackerBackend {
  const fc = cfg.firecracker;
  const r = fc.nic_rate_limit;
  return new FirecrackerBackend({
    instanceName: cfg.instance_name,
    firecrackerPath: fc.binary_path,
    jailerPath: fc.jailer_path,
    uid: fc.uid,
    gid: fc.gid,
    chrootBaseDir: fc.chroot_base_dir,
    dataplaneNetns: cfg.dataplane.netns,
    seccomp: cfg.security.seccomp_enabled,
    rateLimit: {
      rxBytesPerSec: r.rx_bytes_per_sec,
      txBytesPerSec: r.tx_bytes_per_sec,
      rxPacketsPerSec: r.rx_packets_per_sec,
      txPacketsPerSec: r.tx_packets_per_sec,
    },
    readiness: fc.readiness,
    bootTimeoutMs: fc.boot_timeout,
    log,
  });
}
