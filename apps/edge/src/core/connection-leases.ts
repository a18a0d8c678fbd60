import type { PlateId } from "@plate/protocol";
import type { Store } from "@plate/store";
import type { Logger } from "../log.js";

export interface ConnectionLeaseSettings {
  /** How often this node reports its plates' open connections and learns the others' (`CONNECTION_REPORT_MS`). */
  readonly reportMs: number;
  /** How long a report counts without being renewed (`CONNECTION_LEASE_MS`): a dead node's connections stop counting then. */
  readonly leaseMs: number;
}

/**
 * A plate's open connections on the other nodes, as each node last reported them to the store, so
 * that a plate's connection limit holds over every node (issue 17).
 *
 * Every `reportMs` this node reports the plates whose count changed since their last report, whose
 * lease is half gone, that were asked about (a connect was checked) within a lease, or whose other
 * nodes' count was last learned half a lease ago; the store answers each one's count on the other
 * nodes. One store call per report, whatever the number of plates (one pipeline), and while no
 * plate is busy only the renewals.
 *
 * The limit is checked against this node's open connections plus the others' last reports, so it
 * can be passed by what other nodes opened since they last reported: at most one report period
 * of connects on each other node (documented with `CONNECTION_REPORT_MS`). A connect of a plate
 * whose others' count this node does not know, or learned more than two periods ago, first learns
 * it (`learn`: one store call, shared by the connects that wait for it); a busy plate stays known
 * through the reports, so only the first connect after a quiet time waits.
 */
export class ConnectionLeases {
  /** The other nodes' open connections, by plate, from the last report that named it, and when (ms). */
  readonly #others = new Map<PlateId, { readonly count: number; readonly atMs: number }>();
  /** What this node last reported of each plate, and when (ms). */
  readonly #reported = new Map<PlateId, { readonly count: number; readonly atMs: number }>();
  /** Plates asked about (`others`), and when last (ms): each is learned afresh at every report for a lease. */
  readonly #asked = new Map<PlateId, number>();
  #timer: NodeJS.Timeout | undefined;
  #reporting: Promise<void> | undefined;
  /** `learn` calls in flight, by plate. */
  readonly #learning = new Map<PlateId, Promise<void>>();

  constructor(
    private readonly store: Pick<Store, "reportConnections">,
    private readonly nodeId: string,
    /** This node's open connections (held slots included): by plate, or of one plate. */
    private readonly open: { openByPlate(): ReadonlyMap<PlateId, number>; openOf(plateId: PlateId): number },
    private readonly settings: ConnectionLeaseSettings,
    private readonly log: Logger,
  ) {}

  /** The plate's open connections on the other nodes, as last reported (0 until known). */
  others(plateId: PlateId): number {
    this.#asked.set(plateId, Date.now());
    return this.#others.get(plateId)?.count ?? 0;
  }

  /**
   * Resolves once the plate's others' count is known and fresh (learned within two report
   * periods), asking the store now if it is not. A store that cannot answer leaves what was known.
   */
  learn(plateId: PlateId): Promise<void> {
    this.#asked.set(plateId, Date.now());
    const known = this.#others.get(plateId);
    if (known !== undefined && Date.now() - known.atMs <= 2 * this.settings.reportMs) return Promise.resolve();
    let pending = this.#learning.get(plateId);
    if (pending === undefined) {
      pending = this.#send(new Map([[plateId, this.open.openOf(plateId)]])).finally(() => this.#learning.delete(plateId));
      this.#learning.set(plateId, pending);
    }
    return pending;
  }

  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.report(), this.settings.reportMs);
    this.#timer.unref();
  }

  /** Stops reporting and reports 0 for every plate (a node that drains stops counting at once). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#reporting;
    const gone = new Map<PlateId, number>();
    for (const plateId of this.#reported.keys()) gone.set(plateId, 0);
    if (gone.size > 0) await this.store.reportConnections(this.nodeId, gone, this.settings.leaseMs).catch(() => undefined);
  }

  /** One report (see the class); a report still running is not started again. */
  report(): Promise<void> {
    this.#reporting ??= this.#report().finally(() => {
      this.#reporting = undefined;
    });
    return this.#reporting;
  }

  async #report(): Promise<void> {
    const now = Date.now();
    const open = this.open.openByPlate();
    const due = new Map<PlateId, number>();
    for (const [plateId, count] of open) {
      const last = this.#reported.get(plateId);
      if (last === undefined || last.count !== count || now - last.atMs >= this.settings.leaseMs / 2) due.set(plateId, count);
    }
    for (const plateId of this.#reported.keys()) if (!open.has(plateId)) due.set(plateId, 0);
    const { leaseMs } = this.settings;
    for (const [plateId, atMs] of this.#asked) {
      if (now - atMs > leaseMs) this.#asked.delete(plateId);
      else if (!due.has(plateId)) due.set(plateId, open.get(plateId) ?? 0);
    }
    for (const [plateId, known] of this.#others) if (now - known.atMs >= leaseMs / 2 && !due.has(plateId)) due.set(plateId, open.get(plateId) ?? 0);
    if (due.size === 0) return;
    await this.#send(due);
  }

  /** Reports `due` (this node's counts) and keeps what the store answers of the others. */
  async #send(due: ReadonlyMap<PlateId, number>): Promise<void> {
    const now = Date.now();
    let answers: Map<PlateId, number>;
    try {
      answers = await this.store.reportConnections(this.nodeId, due, this.settings.leaseMs);
    } catch (err) {
      // The last known counts stay; the next report tries again (its plates are still due).
      this.log.debug("open connections not reported; trying again", { error: String(err) });
      return;
    }
    for (const [plateId, count] of due) {
      if (count > 0) this.#reported.set(plateId, { count, atMs: now });
      else this.#reported.delete(plateId);
      const others = answers.get(plateId) ?? 0;
      // A plate with no connections anywhere is forgotten: the map holds only what is in use.
      if (others === 0 && count === 0) this.#others.delete(plateId);
      else this.#others.set(plateId, { count: others, atMs: now });
    }
  }
}
