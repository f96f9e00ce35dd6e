// Allocations in the last rolling hour, counted in one-second buckets: at most
// 3600 buckets live at once whatever the allocation rate, O(1) amortised to
// add, O(log buckets) to take one back (unreserve).
//
// A bucket stops counting an hour after the latest allocation in it, so the
// window errs on the side of counting an allocation up to 1 s too long, never
// too short (and is exact when a second holds one allocation time). Clocks may
// go backwards: a bucket is inserted in order; what left the window at the
// latest time counted at stays out (the hour is measured from that time).

export const HOUR_MS = 3_600_000;

export class RateWindow {
  /** Bucket seconds (epoch seconds), ascending from `head`; counts in `counts`. */
  private secs: number[] = [];
  private counts: number[] = [];
  /** Latest allocation time (ms) in each bucket. */
  private lasts: number[] = [];
  private head = 0;
  private total = 0;

  /** Counts an allocation at `ms`; returns its bucket (to take it back with remove). */
  add(ms: number): number {
    const sec = Math.floor(ms / 1000);
    const n = this.secs.length;
    let i: number;
    if (n > this.head && this.secs[n - 1] === sec) i = n - 1;
    else if (n === this.head || this.secs[n - 1]! < sec) {
      this.secs.push(sec);
      this.counts.push(0);
      this.lasts.push(ms);
      i = n;
    } else {
      i = this.search(sec);
      if (this.secs[i] !== sec) {
        this.secs.splice(i, 0, sec);
        this.counts.splice(i, 0, 0);
        this.lasts.splice(i, 0, ms);
      }
    }
    this.counts[i]!++;
    if (this.lasts[i]! < ms) this.lasts[i] = ms;
    this.total++;
    return sec;
  }

  /** Takes back one allocation counted in bucket `sec` (no-op once it left the window). */
  remove(sec: number): void {
    const i = this.search(sec);
    if (i < this.secs.length && this.secs[i] === sec && this.counts[i]! > 0) {
      this.counts[i]!--;
      this.total--;
    }
  }

  /** Allocations counted at `nowMs` (drops the buckets that left the window). */
  count(nowMs: number): number {
    this.prune(nowMs);
    return this.total;
  }

  get empty(): boolean {
    return this.total === 0;
  }

  /**
   * Milliseconds from `nowMs` until fewer than `limit` allocations remain in
   * the window (0 when that is already so). Infinity when limit is 0.
   */
  waitMs(nowMs: number, limit: number): number {
    this.prune(nowMs);
    if (this.total < limit) return 0;
    if (limit <= 0) return Infinity;
    let leaving = 0;
    for (let i = this.head; i < this.secs.length; i++) {
      leaving += this.counts[i]!;
      if (this.total - leaving < limit) return this.lasts[i]! + HOUR_MS - nowMs;
    }
    return 0;
  }

  private prune(nowMs: number): void {
    const secs = this.secs;
    while (this.head < secs.length && (this.counts[this.head] === 0 || this.lasts[this.head]! + HOUR_MS <= nowMs)) {
      this.total -= this.counts[this.head]!;
      this.head++;
    }
    if (this.head === secs.length) {
      this.secs = [];
      this.counts = [];
      this.lasts = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > secs.length) {
      this.secs = secs.slice(this.head);
      this.counts = this.counts.slice(this.head);
      this.lasts = this.lasts.slice(this.head);
      this.head = 0;
    }
  }

  /** First index in [head, length) whose second is >= sec. */
  private search(sec: number): number {
    let lo = this.head;
    let hi = this.secs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.secs[mid]! < sec) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
