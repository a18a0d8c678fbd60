import { PlateError } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import type { Logger } from "../log.js";
import type { Connections } from "./connections.js";
import type { Tenancy } from "./tenancy.js";

/** What a `Resync` works with. */
export interface ResyncParts {
  readonly tenancy: Tenancy;
  readonly connections: Connections;
  /** Provisions `BOOTSTRAP_PLATES` (idempotent); rejects when the store cannot be reached. */
  readonly provision: () => Promise<void>;
  readonly log: Logger;
  /** How long after a failed pass the next one starts, in ms. */
  readonly retryMs: number;
}

/**
 * Brings the node back in step with the store after it may have missed something: its link to
 * Redis was cut, or a subscriber connection found deaf, so a revocation may have gone unheard
 * (Redis pub/sub keeps nothing) and Redis may have come back empty.
 *
 * A pass: forgets every cached key (a missed revocation may be among them); provisions
 * `BOOTSTRAP_PLATES` again (first, so their connections are not taken for revoked in a Redis that
 * came back empty); then, per plate with open connections, reads the plate and its keys from the
 * store and ends (`revoked`, 4409) every connection whose plate or key is gone, client-token
 * connections included (they carry the minting key's id). Keys are read after the connections
 * are listed, so a key created meanwhile is never taken for revoked. A pass that fails (the
 * store unreachable) is followed by another `retryMs` later, until one succeeds; the node is not
 * in step (`/readyz` 503) from a request until then.
 */
export class Resync {
  readonly #parts: ResyncParts;
  /** A pass was asked for and has not started yet. */
  #wanted = false;
  #running = false;
  #inStep = true;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;
  readonly #waiters = new Set<() => void>();

  constructor(parts: ResyncParts) {
    this.#parts = parts;
  }

  /** Whether the last pass succeeded and no other is due. */
  inStep(): boolean {
    return this.#inStep;
  }

  /**
   * Asks for a pass. Calls in one turn of the event loop share one; a call while a pass runs gets
   * another after it (the running one may have read the store before what prompted the call).
   */
  run(): void {
    if (this.#stopped) return;
    this.#inStep = false;
    this.#wanted = true;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    if (!this.#running) void this.#drive();
  }

  /** Resolves once the node is in step, or after `timeoutMs`, or when stopped; never rejects. */
  whenInStep(timeoutMs: number): Promise<void> {
    if (this.#inStep || this.#stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#waiters.add(done);
    });
  }

  /** Stops retrying; later `run` calls do nothing. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
    for (const done of [...this.#waiters]) done();
  }

  async #drive(): Promise<void> {
    this.#running = true;
    // Let the other calls of this turn (a broker's readiness and gap, say) join this pass.
    await Promise.resolve();
    let ok = true;
    while (this.#wanted && ok && !this.#stopped) {
      this.#wanted = false;
      ok = await this.#pass();
    }
    this.#running = false;
    if (this.#stopped) return;
    if (!ok) {
      this.#retry = setTimeout(() => this.run(), this.#parts.retryMs);
      return;
    }
    this.#inStep = true;
    for (const done of [...this.#waiters]) done();
  }

  /** One pass (see the class); answers whether it succeeded. */
  async #pass(): Promise<boolean> {
    const { tenancy, connections, provision, log } = this.#parts;
    try {
      tenancy.forgetAll();
      await provision();
      const checks = [...connections.keysInUse()].map(([plateId, keyIds]) => this.#check(plateId, keyIds));
      const closed = (await Promise.all(checks)).reduce((sum, n) => sum + n, 0);
      if (closed > 0) log.warn("closed connections whose key or plate is gone (a revocation this node missed)", { closed });
      return true;
    } catch (err) {
      if (err instanceof PlateError && err.code === "broker_unavailable") {
        log.debug("store unreachable; checking again shortly", { error: err.message });
      } else {
        log.error("could not check this node against the store; retrying", { error: String(err) });
      }
      return false;
    }
  }

  /** Ends the connections of `plateId` opened by keys (of `keyIds`: API keys, signing keys) no longer in the store; answers how many. */
  async #check(plateId: PlateId, keyIds: ReadonlySet<string>): Promise<number> {
    const { tenancy, connections } = this.#parts;
    if ((await tenancy.getPlate(plateId)) === undefined) return connections.revoke({ plateId });
    const live = await tenancy.ownerIds(plateId);
    let closed = 0;
    for (const keyId of keyIds) if (!live.has(keyId)) closed += connections.revoke({ plateId, keyId });
    return closed;
  }
}
