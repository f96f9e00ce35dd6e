import { ConnectError } from '@connectrpc/connect';
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, loadConfigFile, resolveConfigPath } from '../config/load.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { registerPoolCommands } from './pool-commands.js';
import { registerVmCommands, UsageError } from './vm-commands.js';

// `metald serve | config check | doctor | vm ...`. Errors print one clear line on
// stderr and map to the documented exit codes.

export async function main(argv: string[]): Promise<number> {
  // `metald render | head`: a reader that stops early is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const program = new Command('metald')
    .description('microVM control plane with security-hardened IPv6 networking')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .option('--api <url>', 'API base URL', process.env.METALD_API ?? 'http://127.0.0.1:8080')
    .option('--token <token>', 'bearer token (or METALD_TOKEN)', process.env.METALD_TOKEN)
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'));

  program.command('serve')
    .description('run the daemon')
    .option('-c, --config <path>', 'config file (else $UNKEY_METALD_CONFIG, else /etc/metald/config.yaml)')
    .option('-p, --port <port>', 'API port (overrides config `port`)')
    .action(async (o) => {
      const { runDaemon } = await import('../daemon/run.js');
      await runDaemon({ configPath: resolveConfigPath(o.config), port: o.port === undefined ? undefined : parsePort(o.port) });
    });

  program.command('quickstart')
    .description('run metald on the embedded default config (sandbox VMs, data plane in its own network namespace)')
    .option('-p, --port <port>', 'API port', '8080')
    .option('--data-dir <dir>', 'state directory (default ./.metald/data)')
    .option('--netns <name>', 'data-plane network namespace (default metald-dp)')
    .option('--instance <name>', 'instance name (default metald)')
    .action(async (o) => {
      const { runQuickstart } = await import('../daemon/run.js');
      await runQuickstart({ port: parsePort(o.port), dataDir: o.dataDir, netns: o.netns, instance: o.instance });
    });

  const config = program.command('config').description('configuration tools');
  config.command('check [file]')
    .description('validate a config file without starting')
    .action(async (file?: string) => {
      const path = resolveConfigPath(file);
      const { warnings } = loadConfigFile(path);
      for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
      process.stdout.write(`${path}: OK\n`);
    });

  program.command('render [file]')
    .description('print the nftables tables and radvd.conf metald would apply for a config (nothing is applied)')
    .option('--nft', 'only the nftables tables')
    .option('--radvd', 'only radvd.conf')
    .action(async (file: string | undefined, o: { nft?: boolean; radvd?: boolean }) => {
      const { renderAll } = await import('../daemon/render.js');
      const path = resolveConfigPath(file);
      const { config: cfg, warnings } = loadConfigFile(path);
      for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
      const out = renderAll(cfg);
      const both = !o.nft && !o.radvd;
      if (both || o.nft) process.stdout.write(out.nft ? `# nftables (nft -f)\n${out.nft}` : '# nftables: none (no bridges, or ipv6.security.enable_firewall_integration is off)\n');
      if (both || o.radvd) process.stdout.write(out.radvd ? `# radvd.conf\n${out.radvd}` : '# radvd.conf: none\n');
    });

  // Set by commands whose outcome is not an error but still a non-zero exit (doctor: host not ready).
  let exitCode: number = EXIT.ok;
  program.command('doctor')
    .description('check that this host can run metald: sysctl baseline, kernel features, binaries (exit 1 if a must-have fails)')
    .option('-c, --config <path>', 'config file (else $UNKEY_METALD_CONFIG, else /etc/metald/config.yaml, else built-in defaults)')
    .option('--netns <name>', 'namespace whose sysctls are checked (default: dataplane.netns)')
    .option('--root', "check the host's own (root) network namespace instead; with --fix, write it")
    .option('--fix', 'apply the sysctl baseline to the checked namespace, then check again')
    .action(async (o) => {
      const { doctorCommand } = await import('../doctor/doctor.js');
      const json = (program.opts() as { output: string }).output === 'json';
      exitCode = await doctorCommand({ configPath: o.config, netns: o.netns, root: o.root === true, fix: o.fix === true, json });
    });

  registerVmCommands(program, () => program.opts());
  registerPoolCommands(program, () => program.opts());

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    return report(err);
  }
}

function parsePort(s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--port: ${JSON.stringify(s)} is not a port (1-65535)`);
  return n;
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`config error:\n${err.message}\n`);
    return EXIT.usage;
  }
  if (err instanceof UsageError) {
    process.stderr.write(`error: ${err.message}\n`);
    return EXIT.usage;
  }
  if (err instanceof ConnectError) {
    process.stderr.write(`error: ${err.rawMessage} (${codeName(err)})\n`);
    return exitCodeFor(err);
  }
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  return EXIT.error;
}

function codeName(err: ConnectError): string {
  return String(err.code).replace(/^\d+$/, (c) => CODE_NAMES[Number(c)] ?? c);
}

const CODE_NAMES: Record<number, string> = {
  1: 'canceled', 2: 'unknown', 3: 'invalid_argument', 4: 'deadline_exceeded', 5: 'not_found', 6: 'already_exists',
  7: 'permission_denied', 8: 'resource_exhausted', 9: 'failed_precondition', 10: 'aborted', 11: 'out_of_range',
  12: 'unimplemented', 13: 'internal', 14: 'unavailable', 15: 'data_loss', 16: 'unauthenticated',
};
