/**
 * Connections that have not authenticated yet, counted in total and per client address, each count
 * with its cap (0 = unlimited). Such a connection holds a socket and its buffers for up to
 * `WS_AUTH_TIMEOUT_MS` before anyone knows whose it is, and the per-plate connection limit cannot
 * apply to it yet: without these caps one client could hold thousands (issue 11: 4,000 on a node
 * whose plate limit was 5).
 *
 * A holder (the connection's socket) is counted once, from `tryAdd` until `delete`; `delete` of a
 * holder not counted does nothing, so every way a connection leaves (authenticated, refused,
 * closed) may call it.
 */
export class PendingConnections {
  /** Each counted holder and the address it counts under. */
  readonly #held = new Map<object, string>();
  readonly #byAddress = new Map<string, number>();

  constructor(
    /** Pending connections the node holds at most; 0 = unlimited. */
    private readonly maxTotal: number,
    /** Pending connections one address holds at most; 0 = unlimited. */
    private readonly maxPerAddress: number,
  ) {}

  /** Pending connections counted now. */
  get size(): number {
    return this.#held.size;
  }

  /** Counts `holder` under `address`; false, and nothing counted, when either cap is reached. */
  tryAdd(holder: object, address: string): boolean {
    if (this.#held.has(holder)) return true;
    const count = this.#byAddress.get(address) ?? 0;
    if (this.maxTotal !== 0 && this.#held.size >= this.maxTotal) return false;
    if (this.maxPerAddress !== 0 && count >= this.maxPerAddress) return false;
    this.#held.set(holder, address);
    this.#byAddress.set(address, count + 1);
    return true;
  }

  /** Stops counting `holder`. */
  delete(holder: object): void {
    const address = this.#held.get(holder);
    if (address === undefined) return;
    this.#held.delete(holder);
    const count = (this.#byAddress.get(address) ?? 1) - 1;
    if (count === 0) this.#byAddress.delete(address);
    else this.#byAddress.set(address, count);
  }
}
