import { loadConfigFile } from '../config/load.js';
import { createLogger } from '../observability/logger.js';
import { Daemon } from './daemon.js';

/** `metald serve`: load config, start, stop cleanly on SIGINT/SIGTERM. */
export async function runDaemon(opts: { configPath: string; port?: number }): Promise<void> {
  const { config, warnings } = await loadConfigFile(opts.configPath);
  const log = createLogger(config.ipv6?.security?.log_level ?? 'info', config.instance_name);
  for (const w of warnings) log.warn({ config: opts.configPath }, w);
  const daemon = await Daemon.start(config, { port: opts.port, log });
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info({ signal: sig }, 'stopping');
      daemon.stop().finally(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  log.flush();
}
