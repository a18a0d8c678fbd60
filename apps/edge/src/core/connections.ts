import { PlateError } from "@plate/protocol";
import type { Usage } from "./usage.js";
import type { PlateId } from "@plate/protocol";
import type { Revocation } from "@plate/store";
import type { Metrics } from "../metrics.js";
import type { Connection, EndReason } from "./connection.js";

/**
 * One of a plate's connection slots, held for a connection that does not exist yet (while its
 * client token's use is claimed): it counts against the plate's limit until given back, or until
 * `Connections.add` takes it over for the connection (which then frees it when it ends).
 */
export interface ConnectionSlot {
  readonly plateId: PlateId;
  /** Whether it is still held (neither given back nor taken over). */
  readonly held: boolean;
  /** Gives the slot back; does nothing once it was given back or taken over. */
  release(): void;
}

/**
 * Every open subscriber connection of this node, indexed by plate: for the per-plate connection
 * limit, revocation (close what a revoked key or deleted plate opened), heartbeats and drain.
 */
/** No connections (a plate with none on this node). */
const NONE: ReadonlySet<Connection> = new Set();

export class Connections {
  readonly #all = new Set<Connection>();
  readonly #byPlate = new Map<PlateId, Set<Connection>>();
  /** Slots held per plate (see `reserve`); a plate with none has no entry. */
  readonly #reserved = new Map<PlateId, number>();

  constructor(
    private readonly metrics: Metrics,
    /** Open connections one plate may hold over every node; 0 = unlimited. A plate's own limit is given to each call. */
    private readonly maxPerPlate: number,
    /** Told each plate's open connections as they change (its peak is metered). */
    private readonly usage?: Pick<Usage, "connections">,
    /** A plate's open connections on the other nodes (connection-leases.ts); none without it. */
    private readonly others?: { count(plateId: PlateId): number; learn(plateId: PlateId): Promise<void> },
  ) {}

  /**
   * Resolves once the plate's connections on other nodes are known, for a limit check against
   * `max` (none to learn when it is 0, unlimited).
   */
  learn(plateId: PlateId, max: number): Promise<void> {
    return max === 0 || this.others === undefined ? Promise.resolve() : this.others.learn(plateId);
  }

  /** This node's open connections and held slots of one plate. */
  openOf(plateId: PlateId): number {
    return (this.#byPlate.get(plateId)?.size ?? 0) + (this.#reserved.get(plateId) ?? 0);
  }

  /** This node's open connections and held slots, by plate (what it reports to the others). */
  openByPlate(): Map<PlateId, number> {
    const open = new Map<PlateId, number>();
    for (const [plateId, set] of this.#byPlate) open.set(plateId, set.size);
    for (const [plateId, held] of this.#reserved) open.set(plateId, (open.get(plateId) ?? 0) + held);
    return open;
  }

  get size(): number {
    return this.#all.size;
  }

  /** The open connections of one plate on this node. */
  ofPlate(plateId: PlateId): ReadonlySet<Connection> {
    return this.#byPlate.get(plateId) ?? NONE;
  }

  /**
   * Throws `rate_limited` when the plate is at its limit (open connections and held slots); call
   * before accepting a connection.
   */
  checkCapacity(plateId: PlateId, max = this.maxPerPlate): void {
    this.#refuseAtLimit(plateId, max, 0);
  }

  /**
   * Throws `rate_limited` when the plate holds more than `max` connections and slots on this node
   * (the one just added included); for a connection added before its plate's limit was read.
   */
  checkOver(plateId: PlateId, max: number): void {
    this.#refuseAtLimit(plateId, max, 1);
  }

  /** The limit check, for a caller whose own connection is already counted (`counted` 1) or not (0). */
  #refuseAtLimit(plateId: PlateId, max: number, counted: number): void {
    if (max === 0) return;
    const open = this.openOf(plateId) - counted + (this.others?.count(plateId) ?? 0);
    if (open >= max) {
      throw new PlateError(
        "rate_limited",
        `This plate has ${open} open subscriptions, its limit; close some or retry later.`,
        { retryAfterS: 1 },
      );
    }
  }

  /**
   * Holds one of the plate's connection slots (throws `rate_limited` as `checkCapacity` does), for
   * a connect that must not spend anything (a client token's use) unless it can open. The caller
   * gives it to `add`, and releases it in any case when done (a no-op once `add` took it over).
   */
  reserve(plateId: PlateId, max = this.maxPerPlate): ConnectionSlot {
    this.checkCapacity(plateId, max);
    this.#reserved.set(plateId, (this.#reserved.get(plateId) ?? 0) + 1);
    let held = true;
    const reserved = this.#reserved;
    return {
      plateId,
      get held() {
        return held;
      },
      release() {
        if (!held) return;
        held = false;
        const count = (reserved.get(plateId) ?? 1) - 1;
        if (count > 0) reserved.set(plateId, count);
        else reserved.delete(plateId);
      },
    };
  }

  /**
   * Runs `use` with one of the plate's slots held (see `reserve`), given back once `use` settles (a
   * no-op when `use` gave it to `add`). Route 5 claims a client token's use inside: a connect
   * refused at the plate's limit spends none, even when connects race for the last slot.
   */
  async holding<T>(plateId: PlateId, use: (slot: ConnectionSlot) => Promise<T>, max = this.maxPerPlate): Promise<T> {
    const slot = this.reserve(plateId, max);
    try {
      return await use(slot);
    } finally {
      slot.release();
    }
  }

  /**
   * Registers a connection until it ends. With a `slot` of its plate still held, the connection
   * takes it over (no second check against the limit); otherwise throws `rate_limited` at the limit.
   */
  add(conn: Connection, slot?: ConnectionSlot, max = this.maxPerPlate): void {
    const reserved = slot !== undefined && slot.held && slot.plateId === conn.plateId;
    // Given back and taken by the connection in one synchronous step: the count never drops between.
    if (reserved) slot.release();
    else this.checkCapacity(conn.plateId, max);
    this.#all.add(conn);
    let plate = this.#byPlate.get(conn.plateId);
    if (plate === undefined) {
      plate = new Set();
      this.#byPlate.set(conn.plateId, plate);
    }
    plate.add(conn);
    this.usage?.connections(conn.plateId, plate.size);
    this.metrics.connections.inc({ transport: conn.transport });
    const plateLabel = this.metrics.plateLabel(conn.plateId);
    if (plateLabel !== undefined) this.metrics.plateConnections.inc({ plate: plateLabel });
    conn.onEnd(this.#ended);
  }

  /**
   * Every connection's end hook: one function, not a closure per connection (96 bytes of each idle
   * one). A plate's label never changes once given (`Metrics.plateLabel`), so it is asked again.
   */
  readonly #ended = (reason: EndReason, conn: Connection): void => {
    this.#all.delete(conn);
    const set = this.#byPlate.get(conn.plateId);
    if (set !== undefined && set.delete(conn)) {
      if (set.size === 0) this.#byPlate.delete(conn.plateId);
      this.usage?.connections(conn.plateId, set.size);
    }
    this.metrics.connections.dec({ transport: conn.transport });
    const plateLabel = this.metrics.plateLabel(conn.plateId);
    if (plateLabel !== undefined) this.metrics.plateConnections.dec({ plate: plateLabel });
    if (reason !== "normal") this.metrics.drops.inc({ reason });
  };

  /** Ends (4409 `revoked`) every connection of a deleted plate, or of a revoked key. */
  revoke(revocation: Revocation): number {
    const set = this.#byPlate.get(revocation.plateId);
    if (set === undefined) return 0;
    let closed = 0;
    for (const conn of [...set]) {
      if (revocation.keyId === undefined || conn.keyId === revocation.keyId) {
        conn.end("revoked");
        closed += 1;
      }
    }
    return closed;
  }

  /** The plates with open connections, each with the ids of the keys that opened them (see `Resync`). */
  keysInUse(): Map<PlateId, Set<string>> {
    const keys = new Map<PlateId, Set<string>>();
    for (const [plateId, set] of this.#byPlate) keys.set(plateId, new Set([...set].map((conn) => conn.keyId)));
    return keys;
  }

  /** Sends every connection its heartbeat. */
  heartbeat(): void {
    for (const conn of this.#all) conn.heartbeat();
  }

  /** Ends every connection with `reason`. */
  endAll(reason: EndReason): void {
    for (const conn of [...this.#all]) conn.end(reason);
  }
}
