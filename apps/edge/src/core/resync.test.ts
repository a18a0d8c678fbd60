import { describe, expect, it } from "vitest";
import { PlateError } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import { MemoryStore, signingKeyOwner } from "@plate/store";
import type { Store } from "@plate/store";
import { Metrics } from "../metrics.js";
import { createLogger } from "../log.js";
import type { Connection, EndReason } from "./connection.js";
import { Connections } from "./connections.js";
import { Resync } from "./resync.js";
import { Tenancy } from "./tenancy.js";
import { TEST_LIMITS } from "../test-support/limits.js";

const RETENTION = { count: 10, ageMs: 60_000, markTtlMs: 3_600_000 };
const RETRY_MS = 20;

/** A connection as the registry sees it, recording how it ended. */
function fakeConnection(plateId: string, keyId: string): Connection & { endedWith: EndReason | undefined } {
  const hooks: ((reason: EndReason, conn: Connection) => void)[] = [];
  const conn = {
    plateId: plateId as PlateId,
    keyId,
    transport: "sse",
    endedWith: undefined as EndReason | undefined,
    onEnd: (hook: (reason: EndReason, conn: Connection) => void) => void hooks.push(hook),
    end(reason: EndReason) {
      if (conn.endedWith !== undefined) return;
      conn.endedWith = reason;
      for (const hook of hooks) hook(reason, conn as unknown as Connection);
    },
  };
  return conn as unknown as Connection & { endedWith: EndReason | undefined };
}

/** A store whose reads fail with `broker_unavailable` while `down` is true. */
function flaky(store: Store): Store & { down: boolean } {
  const state = { down: false };
  return new Proxy(store, {
    get(target, name, receiver) {
      if (name === "down") return state.down;
      const value = Reflect.get(target, name, receiver) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (state.down && name !== "onResync" && name !== "onRevoked" && name !== "isReady") {
          return Promise.reject(new PlateError("broker_unavailable", "down"));
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
    set(_target, name, value) {
      if (name !== "down") return false;
      state.down = value as boolean;
      return true;
    },
  }) as Store & { down: boolean };
}

async function setup(options: { down?: boolean } = {}) {
  const memory = await MemoryStore.open({ tokenTombstoneMs: 1000, tokenSweepMs: 60_000 });
  const store = flaky(memory);
  const tenancy = new Tenancy(store, 60_000, RETENTION, TEST_LIMITS);
  const connections = new Connections(new Metrics(0), 0);
  let provisions = 0;
  const resync = new Resync({
    tenancy,
    connections,
    provision: async () => {
      await store.listPlates();
      provisions += 1;
    },
    log: createLogger("silent"),
    retryMs: RETRY_MS,
  });
  store.down = options.down ?? false;
  return { memory, store, tenancy, connections, resync, provisions: () => provisions };
}

async function plateWithKeys(tenancy: Tenancy, id: string, keys: number): Promise<{ id: string; secret: string }[]> {
  await tenancy.createPlate({ id });
  const made = [];
  for (let i = 0; i < keys; i++) made.push(await tenancy.createKey(id as PlateId, {}));
  return made;
}

describe("Resync (re-checking a node's connections against the store)", () => {
  it("ends, as revoked, the connections whose key, signing key or plate is gone, client-token ones included, and leaves the others open", async () => {
    const { memory, tenancy, connections, resync } = await setup();
    const [revoked, kept] = await plateWithKeys(tenancy, "alpha", 2);
    const signing = (id: string) => ({ id, plateId: "alpha" as PlateId, alg: "HS256" as const, key: "k".repeat(43), createdAt: new Date().toISOString() });
    await memory.createSigningKey(signing("sk_kept"));
    await memory.createSigningKey(signing("sk_gone"));
    await plateWithKeys(tenancy, "beta", 1);
    const [betaKey] = await tenancy.listKeys("beta" as PlateId);
    // The same key id opens a plain connection and a client-token one: both carry the key's id.
    const doomed = [fakeConnection("alpha", revoked!.id), fakeConnection("alpha", revoked!.id)];
    const alive = fakeConnection("alpha", kept!.id);
    const signedAlive = fakeConnection("alpha", signingKeyOwner("sk_kept"));
    const signedDoomed = fakeConnection("alpha", signingKeyOwner("sk_gone"));
    const deleted = fakeConnection("beta", betaKey!.id);
    for (const conn of [...doomed, alive, deleted, signedAlive, signedDoomed]) connections.add(conn);
    // Gone from the store without this node being told (as when its subscriber was cut).
    const quiet = memory.onRevoked(() => undefined);
    await memory.deleteKey("alpha" as PlateId, revoked!.id);
    await memory.deletePlate("beta" as PlateId);
    await memory.deleteSigningKey("alpha" as PlateId, "sk_gone");
    quiet();

    resync.run();
    expect(resync.inStep()).toBe(false);
    await resync.whenInStep(1000);
    expect(resync.inStep()).toBe(true);
    expect(doomed.map((c) => c.endedWith)).toEqual(["revoked", "revoked"]);
    expect(deleted.endedWith).toBe("revoked");
    expect(signedDoomed.endedWith).toBe("revoked");
    expect([alive.endedWith, signedAlive.endedWith]).toEqual([undefined, undefined]);
    expect(connections.size).toBe(2);
  });

  it("forgets every cached key, so a revoked one is refused at once", async () => {
    const { memory, tenancy, resync } = await setup();
    const [key] = await plateWithKeys(tenancy, "gamma", 1);
    await tenancy.authenticateSecret("gamma" as PlateId, key!.secret);
    await memory.deleteKey("gamma" as PlateId, key!.id);
    // Still cached: the node was not told.
    await expect(tenancy.authenticateSecret("gamma" as PlateId, key!.secret)).resolves.toBeDefined();
    resync.run();
    await resync.whenInStep(1000);
    await expect(tenancy.authenticateSecret("gamma" as PlateId, key!.secret)).rejects.toMatchObject({ code: "invalid_api_key" });
  });

  it("stays out of step while the store cannot be reached, tries again, and is in step once a pass succeeds", async () => {
    const { store, resync, provisions } = await setup({ down: true });
    resync.run();
    await new Promise((r) => setTimeout(r, RETRY_MS * 5));
    expect(resync.inStep()).toBe(false);
    expect(provisions()).toBe(0);
    store.down = false;
    await resync.whenInStep(1000);
    expect(resync.inStep()).toBe(true);
    expect(provisions()).toBe(1);
    resync.stop();
  });

  it("makes one pass for the requests of one turn, and another for a request made while it runs", async () => {
    const { resync, provisions } = await setup();
    resync.run();
    resync.run();
    resync.run();
    await resync.whenInStep(1000);
    expect(provisions()).toBe(1);
    resync.run();
    await Promise.resolve();
    await Promise.resolve();
    resync.run();
    await resync.whenInStep(1000);
    expect(provisions()).toBe(3);
  });
});
