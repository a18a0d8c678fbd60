/**
 * A list that grows at its end and drops from its front, both in O(1): a channel's retained
 * messages in the memory broker, where a full channel drops its oldest entry on every publish.
 *
 * An array's `shift` is not that: V8 copies every element kept when the array has at most 100
 * (`kMaxCopyElements`), as a channel at the default `HISTORY_COUNT=100` has, which cost about
 * 4,000 instructions a publish (callgrind, load-tests W3; 250 ns against 60 ns at 101 elements).
 * Here the front is an index; the slots before it are cleared at once (their entries can be
 * collected) and given back by one in-place copy once they are at least half the array, so each
 * entry is copied at most once on average.
 */
export class FrontQueue<T> {
  #items: (T | undefined)[] = [];
  #front = 0;

  get length(): number {
    return this.#items.length - this.#front;
  }

  /** The entry at `index` (0 = the oldest); `index` must be below `length`. */
  at(index: number): T {
    return this.#items[this.#front + index] as T;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  /** Drops the `count` oldest entries (at most `length`). */
  dropFront(count: number): void {
    const items = this.#items;
    const end = this.#front + count;
    for (let i = this.#front; i < end; i++) items[i] = undefined;
    this.#front = end;
    if (end === items.length) {
      items.length = 0;
      this.#front = 0;
    } else if (end >= MIN_RECLAIMED && end * 2 >= items.length) {
      items.copyWithin(0, end);
      items.length -= end;
      this.#front = 0;
    }
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.#front; i < this.#items.length; i++) yield this.#items[i] as T;
  }
}

/** Cleared slots at the front that are worth a copy to give back (fewer are left until later). */
const MIN_RECLAIMED = 32;
