import { PlateError } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import type { Revocation } from "@plate/store";
import type { Metrics } from "../metrics.js";
import type { Connection, EndReason } from "./connection.js";

/**
 * Every open subscriber connection of this node, indexed by plate: for the per-plate connection
 * limit, revocation (close what a revoked key or deleted plate opened), heartbeats and drain.
 */
export class Connections {
  readonly #all = new Set<Connection>();
  readonly #byPlate = new Map<PlateId, Set<Connection>>();

  constructor(
    private readonly metrics: Metrics,
    /** Open connections one plate may hold on this node; 0 = unlimited. */
    private readonly maxPerPlate: number,
  ) {}

  get size(): number {
    return this.#all.size;
  }

  /** Throws `rate_limited` when the plate is at its limit; call before accepting a connection. */
  checkCapacity(plateId: PlateId): void {
    const open = this.#byPlate.get(plateId)?.size ?? 0;
    if (this.maxPerPlate !== 0 && open >= this.maxPerPlate) {
      throw new PlateError(
        "rate_limited",
        `This plate has ${open} open subscriptions on this node, its limit; close some or retry later.`,
        { retryAfterS: 1 },
      );
    }
  }

  /** Registers a connection until it ends. */
  add(conn: Connection): void {
    this.checkCapacity(conn.plateId);
    this.#all.add(conn);
    let plate = this.#byPlate.get(conn.plateId);
    if (plate === undefined) {
      plate = new Set();
      this.#byPlate.set(conn.plateId, plate);
    }
    plate.add(conn);
    this.metrics.connections.inc({ transport: conn.transport });
    const plateLabel = this.metrics.plateLabel(conn.plateId);
    if (plateLabel !== undefined) this.metrics.plateConnections.inc({ plate: plateLabel });
    conn.onEnd((reason) => {
      this.#all.delete(conn);
      const set = this.#byPlate.get(conn.plateId);
      if (set !== undefined && set.delete(conn) && set.size === 0) this.#byPlate.delete(conn.plateId);
      this.metrics.connections.dec({ transport: conn.transport });
      if (plateLabel !== undefined) this.metrics.plateConnections.dec({ plate: plateLabel });
      if (reason !== "normal") this.metrics.drops.inc({ reason });
    });
  }

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

  /** Sends every connection its heartbeat. */
  heartbeat(): void {
    for (const conn of this.#all) conn.heartbeat();
  }

  /** Ends every connection with `reason`. */
  endAll(reason: EndReason): void {
    for (const conn of [...this.#all]) conn.end(reason);
  }
}
