import { nftList, type NftObject } from '../kernel/nft.js';

// Everything the firewall plane reads back from nftables, in one place: listings of metald's own
// tables (and `list chains`, which the plane filters by table), never the whole ruleset.

export type SetKind = 'set' | 'map';

export class GuardReader {
  constructor(private readonly netns: string | undefined, private readonly family: string, private readonly guardTable: string) {}

  /** A table's chains, rules and set declarations (terse: no elements); undefined when it does not exist. */
  async table(family = this.family, table = this.guardTable): Promise<NftObject[] | undefined> {
    try {
      return await nftList(this.netns, ['table', family, table], { terse: true });
    } catch (err) {
      if (err instanceof Error && /No such file or directory/.test(err.message)) return undefined;
      throw err;
    }
  }

  /** Names of a table's chains and sets, without rules or elements (milliseconds at any size). */
  async names(family: string, table: string): Promise<{ chains: string[]; sets: string[] }> {
    const mine = (o: NftObject, kind: string) => (o[kind] as { table?: string; name?: string } | undefined)?.table === table;
    const name = (o: NftObject, kind: string) => (o[kind] as { name: string }).name;
    const [chains, sets] = await Promise.all([
      nftList(this.netns, ['chains', family]),
      nftList(this.netns, ['sets', family], { terse: true }),
    ]);
    return { chains: chains.filter((o) => mine(o, 'chain')).map((o) => name(o, 'chain')), sets: sets.filter((o) => mine(o, 'set')).map((o) => name(o, 'set')) };
  }

  /** One set's or map's elements (of the guard table unless told). */
  elements(name: string, kind: SetKind = 'set', family = this.family, table = this.guardTable): Promise<NftObject[]> {
    return nftList(this.netns, [kind, family, table, name]);
  }

  /** Several sets of the guard table, one after the other (each listing of a 10k-port set takes ~0.5 s). */
  async sets(sets: readonly { name: string; kind: SetKind }[]): Promise<Map<string, NftObject[]>> {
    const out = new Map<string, NftObject[]>();
    for (const { name, kind } of sets) out.set(name, await this.elements(name, kind));
    return out;
  }

  /** Every chain of the family, rules left out (the caller picks its table's). */
  chains(): Promise<NftObject[]> {
    return nftList(this.netns, ['chains', this.family]);
  }

  /** One chain of the guard table with its rules and their handles. */
  chain(name: string): Promise<NftObject[]> {
    return nftList(this.netns, ['chain', this.family, this.guardTable, name]);
  }
}
