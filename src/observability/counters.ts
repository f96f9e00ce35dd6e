// PURE: kernel counters (nft set-element counters, link statistics) turned
// into monotonic totals and per-tick deltas. The kernel's values are the
// truth; metald never increments its own copy, it only remembers the last raw
// value per key. A raw value below the last one means the counter restarted
// (a guard table replaced whole, a link re-created): the new raw value is then
// the delta. A key that vanishes (VM deleted) moves its total into `retired`,
// so a sum over all keys never goes down (Prometheus counter semantics).

export interface Delta {
  key: string;
  count: number;
}

interface Entry {
  raw: number;
  total: number;
}

export class MonotonicCounters {
  private readonly entries = new Map<string, Entry>();
  private retiredTotal = 0;
  private seeded = false;

  /**
   * Apply one complete snapshot (every key this counter family has now).
   * On the first snapshot a key's raw value is its starting total and yields
   * no delta (counts from before metald started are not new events); a key
   * first seen later starts from 0, so its whole raw value is a delta.
   */
  apply(snapshot: ReadonlyMap<string, number>, restarted = false): Delta[] {
    const deltas: Delta[] = [];
    // Known restart (the set was re-created): every key counts from 0 again, even one whose new raw value is not lower.
    if (restarted) for (const e of this.entries.values()) e.raw = 0;
    for (const [key, raw] of snapshot) {
      const e = this.entries.get(key);
      if (!e) {
        this.entries.set(key, { raw, total: raw });
        if (this.seeded && raw > 0) deltas.push({ key, count: raw });
        continue;
      }
      const d = raw >= e.raw ? raw - e.raw : raw;
      e.raw = raw;
      if (d > 0) {
        e.total += d;
        deltas.push({ key, count: d });
      }
    }
    for (const [key, e] of this.entries) {
      if (snapshot.has(key)) continue;
      this.retiredTotal += e.total;
      this.entries.delete(key);
    }
    this.seeded = true;
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
