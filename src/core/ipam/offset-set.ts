// A set of offsets in [0, size) that answers "lowest offset not in the set"
// in O(log n), with time and memory proportional to what was added, never to
// `size` (which reaches 2^64 for the /128s of a /64).
//
// Layout: the offsets are cut into chunks of CHUNK_BITS; a chunk exists once
// some offset in it was set (a Uint32Array bitmap plus its popcount).
// Where a free offset can be found:
//   - in an existing chunk that is not full: every such chunk is in `heap`
//     (a min-heap of chunk indexes; chunks that filled up are dropped from it
//     lazily when they reach the top);
//   - in a chunk that does not exist: `frontier` is the lowest such index
//     (every chunk below it exists). It moves forward lazily, skipping
//     existing chunks and excluded ranges.
// So lowestFree = min(heap top, frontier), then the first zero bit there.
//
// Chunks that become empty stay (so an address at a chunk boundary that is
// taken and given back over and over costs nothing extra); once empty chunks
// outnumber the others they are swept in one pass, which lowers the frontier
// to the lowest swept index and rebuilds the heap: O(1) amortised, and memory
// stays proportional to the offsets in the set.
//
// Offsets are `number` while <= Number.MAX_SAFE_INTEGER, `bigint` above
// (only /64 spaces reach that); chunk indexes always fit a number because
// 2^64 / CHUNK_BITS = 2^53.

import { ChurnMap } from './churn-map.js';

export const CHUNK_BITS = 2048;
const WORDS = CHUNK_BITS / 32;
const CHUNK_BITS_N = BigInt(CHUNK_BITS);
const FULL_WORD = 0xffffffff;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** An offset: a number when it is a safe integer, else a bigint. */
export type Offset = number | bigint;

/** Canonical Offset for a bigint value. */
export function toOffset(v: bigint): Offset {
  return v <= SAFE ? Number(v) : v;
}

export function offsetToBigInt(o: Offset): bigint {
  return typeof o === 'bigint' ? o : BigInt(o);
}

/** Min-heap of non-negative integers (chunk indexes). */
export class MinHeap {
  private readonly a: number[] = [];

  get size(): number {
    return this.a.length;
  }

  peek(): number | undefined {
    return this.a[0];
  }

  push(v: number): void {
    const a = this.a;
    let i = a.length;
    a.push(v);
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pv = a[p] as number;
      if (pv <= v) break;
      a[i] = pv;
      i = p;
    }
    a[i] = v;
  }

  pop(): number | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (top === undefined || last === undefined || a.length === 0) return top;
    const n = a.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && (a[r] as number) < (a[l] as number) ? r : l;
      if ((a[c] as number) >= last) break;
      a[i] = a[c] as number;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

interface Chunk {
  bits: Uint32Array;
  /** Set bits, including the padding past `size` in a last partial chunk. */
  count: number;
  /** No zero bit below word `hint` (lets dense chunks skip their full prefix). */
  hint: number;
  /** Its index is in the heap. */
  inHeap: boolean;
}

export class OffsetSet {
  readonly size: bigint;
  private readonly chunkCount: number;
  /** Bits in the last chunk that lie inside the space (CHUNK_BITS when it is whole). */
  private readonly lastBits: number;
  private readonly chunks = new ChurnMap<number, Chunk>();
  private heap = new MinHeap();
  private liveChunks = 0;
  private frontier = 0;
  private emptyChunks = 0;
  /** Whole chunks [lo, hi) that are permanently full and never materialised. */
  private readonly excluded: { lo: number; hi: number }[] = [];
  private setCount = 0;
  private readonly sizeN: number;
  /** Scratch results of split(): chunk index and bit, kept off the heap. */
  private sc = 0;
  private sb = 0;

  constructor(size: bigint) {
    if (size < 1n || size > 1n << 64n) throw new RangeError(`offset set size ${size} out of range`);
    this.size = size;
    this.sizeN = Number(size);
    this.chunkCount = Number((size + CHUNK_BITS_N - 1n) / CHUNK_BITS_N);
    const rem = Number(size % CHUNK_BITS_N);
    this.lastBits = rem === 0 ? CHUNK_BITS : rem;
  }

  /** Offsets added and not deleted (excluded ranges not counted). */
  get count(): number {
    return this.setCount;
  }

  /** Chunks held in memory (tests check the memory bound with it). */
  get chunksInMemory(): number {
    return this.liveChunks;
  }

  has(off: Offset): boolean {
    this.split(off);
    const c = this.sc;
    const b = this.sb;
    if (this.isExcluded(c)) return true;
    const ch = this.chunks.get(c);
    return ch !== undefined && (ch.bits[b >>> 5]! & (1 << (b & 31))) !== 0;
  }

  /** Sets `off`; false when it was already set (or lies in an excluded range). */
  add(off: Offset): boolean {
    this.split(off);
    const c = this.sc;
    const b = this.sb;
    if (this.excluded.length !== 0 && this.isExcluded(c)) return false;
    let ch = this.chunks.get(c);
    if (ch === undefined) {
      ch = this.newChunk(c);
      this.chunks.add(c, ch);
      this.liveChunks++;
      if (ch.count === 0) this.emptyChunks++;
      if (ch.count < CHUNK_BITS) this.toHeap(c, ch);
    }
    const w = b >>> 5;
    const m = 1 << (b & 31);
    const word = ch.bits[w]!;
    if ((word & m) !== 0) return false;
    ch.bits[w] = word | m;
    if (ch.count++ === 0) this.emptyChunks--;
    this.setCount++;
    return true;
  }

  /** Clears `off`; false when it was not set. */
  delete(off: Offset): boolean {
    this.split(off);
    const c = this.sc;
    const b = this.sb;
    const ch = this.chunks.get(c);
    if (ch === undefined) return false;
    const w = b >>> 5;
    const m = 1 << (b & 31);
    const word = ch.bits[w]!;
    if ((word & m) === 0) return false;
    if (ch.count === CHUNK_BITS) this.toHeap(c, ch);
    ch.bits[w] = word & ~m;
    ch.count--;
    this.setCount--;
    if (w < ch.hint) ch.hint = w;
    if (ch.count === 0 && ++this.emptyChunks > 64 && this.emptyChunks * 2 > this.liveChunks) this.sweep();
    return true;
  }

  /** The lowest offset not in the set, or undefined when every offset is. */
  lowestFree(): Offset | undefined {
    const heap = this.heap;
    let top = heap.peek();
    while (top !== undefined) {
      const ch = this.chunks.get(top);
      if (ch === undefined || ch.count < CHUNK_BITS) break;
      heap.pop();
      ch.inHeap = false;
      top = heap.peek();
    }
    this.advanceFrontier();
    let c = this.frontier < this.chunkCount ? this.frontier : Infinity;
    if (top !== undefined && top < c) c = top;
    if (c === Infinity) return undefined;
    const ch = this.chunks.get(c);
    const bit = ch === undefined ? 0 : firstZero(ch);
    return c < 2 ** 42 ? c * CHUNK_BITS + bit : BigInt(c) * CHUNK_BITS_N + BigInt(bit);
  }

  /**
   * Marks [lo, hi) as permanently taken. Whole chunks are recorded as a range
   * (no memory per chunk); the partial chunks at either end are set bit by bit.
   * Meant for a few large blocks (a bridge subnet shorter than /64).
   */
  excludeRange(lo: bigint, hi: bigint): void {
    if (hi > this.size) hi = this.size;
    if (lo >= hi) return;
    const firstWhole = (lo + CHUNK_BITS_N - 1n) / CHUNK_BITS_N;
    const endWhole = hi / CHUNK_BITS_N;
    if (firstWhole >= endWhole) {
      for (let v = lo; v < hi; v++) this.add(toOffset(v));
      return;
    }
    for (let v = lo; v < firstWhole * CHUNK_BITS_N; v++) this.add(toOffset(v));
    for (let v = endWhole * CHUNK_BITS_N; v < hi; v++) this.add(toOffset(v));
    const r = { lo: Number(firstWhole), hi: Number(endWhole) };
    // Drop whatever was materialised inside the range; it is full from now on.
    for (const [c, ch] of [...this.chunks.entries()]) {
      if (c >= r.lo && c < r.hi) {
        this.setCount -= ch.count;
        if (ch.count === 0) this.emptyChunks--;
        this.chunks.remove(c);
        this.liveChunks--;
      }
    }
    this.excluded.push(r);
    this.rebuildHeap();
  }

  /** Drops empty chunks: the frontier comes down to the lowest of them, the heap is rebuilt. */
  private sweep(): void {
    for (const [c, ch] of [...this.chunks.entries()]) {
      if (ch.count !== 0) continue;
      this.chunks.remove(c);
      this.liveChunks--;
      if (c < this.frontier) this.frontier = c;
    }
    this.emptyChunks = 0;
    this.rebuildHeap();
  }

  private rebuildHeap(): void {
    this.heap = new MinHeap();
    for (const [c, ch] of this.chunks.entries()) {
      ch.inHeap = false;
      if (ch.count < CHUNK_BITS) this.toHeap(c, ch);
    }
  }

  /** Sets this.sc / this.sb to the chunk and bit of `off`. */
  private split(off: Offset): void {
    if (typeof off === 'number') {
      if (!(off >= 0 && off < this.sizeN) || off !== Math.floor(off)) throw new RangeError(`offset ${off} out of range`);
      const c = Math.floor(off / CHUNK_BITS);
      this.sc = c;
      this.sb = off - c * CHUNK_BITS;
      return;
    }
    if (off < 0n || off >= this.size) throw new RangeError(`offset ${off} out of range`);
    this.sc = Number(off / CHUNK_BITS_N);
    this.sb = Number(off % CHUNK_BITS_N);
  }

  private isExcluded(c: number): boolean {
    for (const r of this.excluded) if (c >= r.lo && c < r.hi) return true;
    return false;
  }

  private toHeap(c: number, ch: Chunk): void {
    if (ch.inHeap) return;
    ch.inHeap = true;
    this.heap.push(c);
  }

  private advanceFrontier(): void {
    for (;;) {
      const f = this.frontier;
      if (f >= this.chunkCount) return;
      if (this.chunks.get(f) !== undefined) {
        this.frontier = f + 1;
        continue;
      }
      const r = this.excluded.length === 0 ? undefined : this.excluded.find((x) => f >= x.lo && f < x.hi);
      if (r === undefined) return;
      this.frontier = r.hi;
    }
  }

  private newChunk(c: number): Chunk {
    const ch: Chunk = { bits: new Uint32Array(WORDS), count: 0, hint: 0, inHeap: false };
    if (c === this.chunkCount - 1 && this.lastBits < CHUNK_BITS) {
      // Padding past the end of the space counts as set, so it is never handed out.
      for (let b = this.lastBits; b < CHUNK_BITS; b++) ch.bits[b >>> 5] = ch.bits[b >>> 5]! | (1 << (b & 31));
      ch.count = CHUNK_BITS - this.lastBits;
    }
    return ch;
  }
}

function firstZero(ch: Chunk): number {
  const bits = ch.bits;
  for (let w = ch.hint; w < WORDS; w++) {
    const v = bits[w]!;
    if (v !== FULL_WORD) {
      ch.hint = w;
      const lowZero = ~v & (v + 1);
      return w * 32 + (31 - Math.clz32(lowZero));
    }
  }
  throw new Error('offset set: chunk has no zero bit although its count says so');
}
