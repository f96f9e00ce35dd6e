// A Map for keys that are deleted and added again over and over (an address
// released, expired and handed out again). V8's Map keeps a deleted entry in
// its bucket chain until the table is rehashed, and set() after delete()
// appends a new entry, so one key churned N times makes every lookup in that
// bucket walk up to N dead entries: measured 28 µs per set+delete of one key
// with 10k other keys live, 92 µs with 50k (node 20). Here remove() only
// overwrites the value with a tombstone (add() then reuses the same entry),
// and the dead entries are dropped by rebuilding the Map once they outnumber
// twice the live ones: every operation O(1) amortised, memory O(live).
//
// add() and remove() trust the caller (add: the key is not live; remove: it
// is), which saves the lookup a check would cost; every caller in this
// folder looked the key up just before.

const TOMB: unique symbol = Symbol('removed');

export class ChurnMap<K, V> {
  private map = new Map<K, V | typeof TOMB>();
  private live = 0;

  get size(): number {
    return this.live;
  }

  get(k: K): V | undefined {
    const v = this.map.get(k);
    return v === TOMB ? undefined : v;
  }

  /** Adds a key that is not live. */
  add(k: K, v: V): void {
    this.map.set(k, v);
    this.live++;
  }

  /** Sets a new value for a live key. */
  replace(k: K, v: V): void {
    this.map.set(k, v);
  }

  /** Removes a live key. */
  remove(k: K): void {
    const m = this.map;
    m.set(k, TOMB);
    this.live--;
    if (m.size > 64 && m.size > 3 * this.live) this.compact();
  }

  *values(): IterableIterator<V> {
    for (const v of this.map.values()) if (v !== TOMB) yield v;
  }

  *entries(): IterableIterator<[K, V]> {
    for (const [k, v] of this.map) if (v !== TOMB) yield [k, v];
  }

  private compact(): void {
    const next = new Map<K, V | typeof TOMB>();
    for (const [k, v] of this.map) if (v !== TOMB) next.set(k, v);
    this.map = next;
  }
}
