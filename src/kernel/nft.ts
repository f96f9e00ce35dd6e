import { run } from './exec.js';
import { assertNetnsName } from './names.js';

// Thin nftables adapter: `nft -f -` for changes (one transaction per call) and
// `nft -j` for reads. Tables are always named explicitly: metald never lists
// or flushes the whole ruleset (SPEC-NOTES 11).

const NETNS_DIR = '/run/netns';
const TABLE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const FAMILIES = new Set(['bridge', 'ip6', 'inet', 'ip', 'netdev', 'arp']);

export function assertTableName(name: string): string {
  if (!TABLE.test(name)) throw new Error(`invalid nftables table name ${JSON.stringify(name)}`);
  return name;
}

function nftArgv(netns: string | undefined, args: readonly string[]): [string, string[]] {
  return netns === undefined
    ? ['nft', [...args]]
    : ['nsenter', [`--net=${NETNS_DIR}/${assertNetnsName(netns)}`, '--', 'nft', ...args]];
}

/** Apply a script in one transaction: all of it or nothing. */
export async function nftApply(netns: string | undefined, script: string): Promise<void> {
  if (script.includes('\0')) throw new Error('nft script contains a NUL byte');
  const [file, argv] = nftArgv(netns, ['-f', '-']);
  await run(file, argv, { input: script, timeoutMs: 120_000 });
}

export type NftObject = Record<string, unknown>;

/** `nft -j [-t] list <what...>` as the array under "nftables", metainfo dropped. */
export async function nftList(netns: string | undefined, what: readonly string[], opts: { terse?: boolean } = {}): Promise<NftObject[]> {
  if (what.length >= 3 && FAMILIES.has(what[1]!)) assertTableName(what[2]!);
  const [file, argv] = nftArgv(netns, ['-j', ...(opts.terse ? ['-t'] : []), 'list', ...what]);
  const out = await run(file, argv, { timeoutMs: 120_000 });
  // 64-bit integers would lose precision as JSON numbers: quote long digit runs first.
  const parsed = JSON.parse(out.replace(/([[,:]\s*)(\d{16,})(?=\s*[,\]}])/g, '$1"$2"')) as { nftables?: NftObject[] };
  return (parsed.nftables ?? []).filter((o) => !('metainfo' in o));
}

/** Whether the table exists (a miss is "No such file or directory"). */
export async function nftTableExists(netns: string | undefined, family: string, table: string): Promise<boolean> {
  try {
    await nftList(netns, ['table', family, assertTableName(table)], { terse: true });
    return true;
  } catch (err) {
    if (err instanceof Error && /No such file or directory/.test(err.message)) return false;
    throw err;
  }
}

/** Delete a table if it exists (teardown of an instance and of tests). */
export async function nftDeleteTable(netns: string | undefined, family: string, table: string): Promise<void> {
  if (await nftTableExists(netns, family, table)) await nftApply(netns, `delete table ${family} ${assertTableName(table)}\n`);
}
