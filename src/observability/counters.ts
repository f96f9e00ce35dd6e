// PURE: kernel counters (nft set-element counters, link statistics) turned
// into monotonic totals and per-read deltas. The kernel's values are the
// truth; metald never increments its own copy, it only remembers the last raw
// value per key. A raw value below the last one means the counter restarted
// (a guard table replaced whole, a link re-created): the new raw value is then
// the delta; so is it when the value comes from another epoch (the counter
// set's handle changed). A key missing from a complete listing (VM deleted)
// moves its total into `retired`, so a sum over all keys never goes down
// (Prometheus counter semantics).
//
// Values arrive one by one as the listing is parsed (`observe`), framed by
// `begin`/`end` for a complete listing; a partial read (only the ports that
// moved lately) calls `observe` alone and retires nothing.

export interface Delta {
  key: string;
  count: number;
}

interface Entry {
  raw: number;
  total: number;
  epoch: number;
  /** The complete listing that last saw this key. */
  seen: number;
}

export class MonotonicCounters {
  private readonly entries = new Map<string, Entry>();
  private retiredTotal = 0;
  private seeded = false;
  private listing = 0;
  private applyEpoch = 0;

  /** A complete listing starts: keys it does not observe are retired at `end`. */
  begin(): void {
    this.listing++;
  }

  /**
   * One key's raw value (read in `epoch`): returns the delta. Before the first complete listing has
   * ended, raw values are the starting totals (counts from before metald started are not new events);
   * a key first seen later starts from 0, so its whole raw value is a delta.
   */
  observe(key: string, raw: number, epoch = 0): number {
    const e = this.entries.get(key);
    if (!e) {
      this.entries.set(key, { raw, total: raw, epoch, seen: this.listing });
      return this.seeded ? raw : 0;
    }
    const d = e.epoch !== epoch || raw < e.raw ? raw : raw - e.raw;
    e.raw = raw;
    e.epoch = epoch;
    e.seen = this.listing;
    e.total += d;
    return d;
  }

  /** The complete listing ended: retire the keys it did not have. */
  end(): void {
    for (const [key, e] of this.entries) {
      if (e.seen === this.listing) continue;
      this.retiredTotal += e.total;
      this.entries.delete(key);
    }
    this.seeded = true;
  }

  /** A whole snapshot at once (tests, link statistics): begin, observe each key, end. */
  apply(snapshot: ReadonlyMap<string, number>, restarted = false): Delta[] {
    // Known restart (the set was re-created): every key counts from 0 again, even one whose new raw value is not lower.
    if (restarted) this.applyEpoch++;
    const deltas: Delta[] = [];
    this.begin();
    for (const [key, raw] of snapshot) {
      const count = this.observe(key, raw, this.applyEpoch);
      if (count > 0) deltas.push({ key, count });
    }
    this.end();
    return deltas;
  }

  /** Total of one key (0 when unknown). Equals the kernel counter until that counter restarts. */
  total(key: string): number {
    return this.entries.get(key)?.total ?? 0;
  }

  /** Sum over every key ever seen (gone keys included): never decreases. */
  sum(): number {
    let s = this.retiredTotal;
    for (const e of this.entries.values()) s += e.total;
    return s;
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  get size(): number {
    return this.entries.size;
  }
}
