// Quarantine deadlines. Releases normally arrive in time order, so deadlines
// go into a FIFO (O(1)); one that arrives out of order (the clock went back,
// or load() of rows in any order before sorting) goes into a small min-heap
// instead, so nothing ever leaves quarantine before its own deadline and
// nothing is held past it either. popDue is O(items popped).

/** Items carry their own deadline (no wrapper object per item). */
export class DueQueue<T extends { due: number }> {
  private fifo: T[] = [];
  private head = 0;
  private readonly late: T[] = [];

  get size(): number {
    return this.fifo.length - this.head + this.late.length;
  }

  push(item: T): void {
    const n = this.fifo.length;
    if (n === this.head || this.fifo[n - 1]!.due <= item.due) this.fifo.push(item);
    else this.heapPush(item);
  }

  /** Removes and returns, earliest first, the values whose deadline is <= now. */
  popDue(now: number, out: T[]): void {
    for (;;) {
      const f = this.head < this.fifo.length ? this.fifo[this.head]! : undefined;
      const l = this.late[0];
      const next = f !== undefined && (l === undefined || f.due <= l.due) ? f : l;
      if (next === undefined || next.due > now) break;
      if (next === f) {
        this.head++;
      } else {
        this.heapPop();
      }
      out.push(next);
    }
    if (this.head === this.fifo.length) {
      this.fifo = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.fifo.length) {
      this.fifo = this.fifo.slice(this.head);
      this.head = 0;
    }
  }

  /** The earliest deadline, if any. */
  peekDue(): number | undefined {
    const f = this.head < this.fifo.length ? this.fifo[this.head]!.due : undefined;
    const l = this.late[0]?.due;
    if (f === undefined) return l;
    if (l === undefined) return f;
    return Math.min(f, l);
  }

  private heapPush(it: T): void {
    const a = this.late;
    let i = a.length;
    a.push(it);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.due <= it.due) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = it;
  }

  private heapPop(): void {
    const a = this.late;
    const last = a.pop();
    if (last === undefined || a.length === 0) return;
    const n = a.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && a[r]!.due < a[l]!.due ? r : l;
      if (a[c]!.due >= last.due) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
  }
}
