import { describe, expect, it } from "vitest";
import type { PlateId } from "@plate/protocol";
import { MemoryStore } from "@plate/store";
import type { Store } from "@plate/store";
import { Tenancy } from "./tenancy.js";
import { TEST_LIMITS } from "../test-support/limits.js";

const RETENTION = { count: 100, ageMs: 60_000, markTtlMs: 3_600_000 };
const PLATE = "acme" as PlateId;
const SECRET = "acme-secret-0123456789abcdefghij";

/** The embedded store, counting its key and plate reads, each answered only when `release` is called. */
async function slowStore() {
  const memory = await MemoryStore.open({ tokenTombstoneMs: 1000, tokenSweepMs: 60_000 });
  const reads = { findKey: 0, getPlate: 0 };
  const waiting: (() => void)[] = [];
  const held = <T>(answer: Promise<T>): Promise<T> => new Promise<void>((resolve) => waiting.push(resolve)).then(() => answer);
  const store = new Proxy(memory, {
    get(target, name, receiver) {
      if (name === "findKey" || name === "getPlate") {
        return (...args: unknown[]) => {
          reads[name] += 1;
          return held((target[name] as (...a: unknown[]) => Promise<unknown>).apply(target, args));
        };
      }
      const value: unknown = Reflect.get(target, name, receiver);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as Store;
  const release = () => {
    for (const resolve of waiting.splice(0)) resolve();
  };
  /** Answers every read held, turn after turn, until what they started has settled. */
  const settle = async () => {
    for (let i = 0; i < 20; i++) {
      release();
      await new Promise((r) => setImmediate(r));
    }
  };
  return { memory, store, reads, release, settle };
}

describe("Tenancy", () => {
  it("reads a key missing from its cache once for all the requests that ask for it meanwhile", async () => {
    const { store, reads, release, settle } = await slowStore();
    const tenancy = new Tenancy(store, 60_000, RETENTION, TEST_LIMITS);
    const setup = tenancy.ensurePlateWithKey(PLATE, SECRET);
    await settle();
    await setup;
    const before = { ...reads };
    const asked = Array.from({ length: 50 }, () => tenancy.authenticateSecret(PLATE, SECRET));
    const retention = Array.from({ length: 50 }, () => Promise.resolve(tenancy.settingsOf(PLATE)));
    await new Promise((r) => setImmediate(r));
    release();
    const keys = await Promise.all(asked);
    await Promise.all(retention);
    expect(keys.every((key) => key.plateId === PLATE)).toBe(true);
    expect(reads.findKey - before.findKey).toBe(1);
    expect(reads.getPlate - before.getPlate).toBe(1);
  });

  it("caches nothing a read brought that began before a revocation, so the next request reads again", async () => {
    const { store, reads, settle } = await slowStore();
    const tenancy = new Tenancy(store, 60_000, RETENTION, TEST_LIMITS);
    const setup = tenancy.ensurePlateWithKey(PLATE, SECRET);
    await settle();
    await setup;
    const before = reads.findKey;
    const inFlight = tenancy.authenticateSecret(PLATE, SECRET);
    await new Promise((r) => setImmediate(r));
    tenancy.forget({ plateId: PLATE });
    await settle();
    await inFlight;
    const again = tenancy.authenticateSecret(PLATE, SECRET);
    await settle();
    await again;
    expect(reads.findKey - before).toBe(2);
  });
});
