// A FIFO of at most `capacity` messages for a sink that is down or slow: when
// full, the oldest message goes (the most recent events matter most to an
// operator catching up) and is counted as dropped.

export class BoundedQueue {
  private items: string[] = [];
  private head = 0;
  dropped = 0;

  constructor(readonly capacity: number) {
    if (capacity < 1) throw new Error('queue capacity must be at least 1');
  }

  get length(): number {
    return this.items.length - this.head;
  }

  push(m: string): void {
    if (this.length >= this.capacity) {
      this.head++;
      this.dropped++;
    }
    this.items.push(m);
    // Compact now and then instead of shifting on every take.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  shift(): string | undefined {
    if (this.length === 0) return undefined;
    const m = this.items[this.head++];
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    }
    return m;
  }

  /** Put a message taken but not delivered back at the front. */
  unshift(m: string): void {
    if (this.head > 0) this.items[--this.head] = m;
    else this.items.unshift(m);
  }
}
