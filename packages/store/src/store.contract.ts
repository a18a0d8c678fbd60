import { createHash, randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { PlateError } from "@plate/protocol";
import type { ChannelName, ChannelPattern, ClientToken, PlateId, Scope } from "@plate/protocol";
import type { ClaimResult, KeyRecord, PlateRecord, Revocation, SigningKeyRecord, Store, TokenRecord, WebhookRecord } from "./store.js";
import { TOKEN_COST, signingKeyOwner } from "./store.js";

/**
 * Makes the stores of one test: `node()` returns another node sharing the same backing store (the
 * memory store returns the same instance). `tokenTombstoneMs` is the store's setting of that name.
 */
export interface StoreFixture {
  node(): Promise<Store>;
  close(): Promise<void>;
  readonly tokenTombstoneMs: number;
}

/** A fresh id, so tests never depend on what another test left in a shared backing store. */
function uid(): string {
  return randomBytes(6).toString("hex");
}

function plateRecord(name = "Test plate"): PlateRecord {
  return { id: `p-${uid()}` as PlateId, name, createdAt: new Date().toISOString() };
}

/** A key record and the secret it was made from (the store only ever sees the hash). */
function keyRecord(
  plateId: PlateId,
  options: { scopes?: readonly Scope[]; channels?: readonly string[] | null; name?: string } = {},
): { key: KeyRecord; secret: string } {
  const secret = `sk_${randomBytes(24).toString("base64url")}`;
  const key: KeyRecord = {
    id: `k-${uid()}`,
    plateId,
    name: options.name ?? "test key",
    scopes: options.scopes ?? ["publish", "subscribe", "client"],
    channels:
      options.channels === undefined || options.channels === null
        ? null
        : options.channels.map((c) => c as ChannelPattern),
    hash: createHash("sha256").update(secret).digest("hex"),
    createdAt: new Date().toISOString(),
  };
  return { key, secret };
}

function tokenRecord(
  plateId: PlateId,
  keyId: string,
  options: { maxUses?: number; expiresAt?: number; pattern?: boolean } = {},
): TokenRecord {
  return {
    token: randomBytes(24).toString("base64url") as ClientToken,
    plateId,
    channel: (options.pattern === true ? "user:*" : "room.lobby") as ChannelName | ChannelPattern,
    pattern: options.pattern ?? false,
    keyId,
    maxDurationMs: 60_000,
    maxUses: options.maxUses ?? 1,
    expiresAt: options.expiresAt ?? Date.now() + 60_000,
  };
}

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  return expect.fail("expected the call to reject");
}

function codeOf(err: unknown): string | undefined {
  return err instanceof PlateError ? err.code : undefined;
}

function failureCode(result: ClaimResult): string {
  return result.ok ? "ok" : result.code;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function sleepUntil(epochMs: number): Promise<void> {
  while (Date.now() < epochMs) await sleep(Math.max(1, Math.min(50, epochMs - Date.now())));
}

/** Collects the revocations one listener hears and waits for them. */
function revocations(store: Store) {
  const heard: Revocation[] = [];
  const stop = store.onRevoked((revocation) => void heard.push(revocation));
  return {
    heard,
    stop,
    /** Waits up to the contract's 1 s for a revocation that satisfies `match`. */
    async until(match: (revocation: Revocation) => boolean, timeoutMs = 1000): Promise<Revocation | undefined> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = heard.find(match);
        if (found !== undefined || Date.now() >= deadline) return found;
        await sleep(5);
      }
    },
  };
}

/** Long enough for an announcement that should not come to have come if it were going to. */
async function settle(): Promise<void> {
  await sleep(200);
}

/**
 * The store contract, written once and run against every implementation (see `Store`).
 */
export function runStoreContract(name: string, makeFixture: () => Promise<StoreFixture>): void {
  describe(`${name} store contract`, () => {
    let fixture: StoreFixture | undefined;
    afterEach(async () => {
      await fixture?.close();
      fixture = undefined;
    });
    async function open(): Promise<StoreFixture> {
      fixture ??= await makeFixture();
      return fixture;
    }
    async function node(): Promise<Store> {
      return (await open()).node();
    }

    describe("plates", () => {
      it("creates a plate and reads it back, on another node too", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord("Acme");
        expect(await a.createPlate(plate)).toEqual(plate);
        expect(await a.getPlate(plate.id)).toEqual(plate);
        expect(await b.getPlate(plate.id)).toEqual(plate);
      });

      it("answers undefined for a plate that does not exist", async () => {
        const store = await node();
        expect(await store.getPlate(`p-${uid()}` as PlateId)).toBeUndefined();
      });

      it("lists every plate created, on any node", async () => {
        const a = await node();
        const b = await node();
        const plates = [plateRecord("one"), plateRecord("two"), plateRecord("three")];
        for (const plate of plates) await a.createPlate(plate);
        const ids = new Set(plates.map((p) => p.id));
        const listed = (await b.listPlates()).filter((p) => ids.has(p.id));
        const byId = (x: PlateRecord, y: PlateRecord): number => x.id.localeCompare(y.id);
        expect(listed.sort(byId)).toEqual([...plates].sort(byId));
      });

      it("refuses a duplicate plate id with conflict and keeps the first plate", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord("first");
        await a.createPlate(plate);
        const err = await rejection(b.createPlate({ ...plate, name: "second" }));
        expect(err).toBeInstanceOf(PlateError);
        expect(codeOf(err)).toBe("conflict");
        expect((await a.getPlate(plate.id))?.name).toBe("first");
        expect((await b.listPlates()).filter((p) => p.id === plate.id)).toHaveLength(1);
      });

      it("lets exactly one of many concurrent creations of one id win", async () => {
        const a = await node();
        const b = await node();
        const id = `p-${uid()}` as PlateId;
        const attempts = Array.from({ length: 10 }, (_, i) =>
          (i % 2 === 0 ? a : b).createPlate({ id, name: `try ${i}`, createdAt: new Date().toISOString() }),
        );
        const outcomes = await Promise.allSettled(attempts);
        expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
        for (const outcome of outcomes) {
          if (outcome.status === "rejected") expect(codeOf(outcome.reason)).toBe("conflict");
        }
      });

      it("deletes a plate: true once, then false, and it is gone from every node", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        expect(await b.deletePlate(plate.id)).toBe(true);
        expect(await a.getPlate(plate.id)).toBeUndefined();
        expect((await a.listPlates()).some((p) => p.id === plate.id)).toBe(false);
        expect(await a.deletePlate(plate.id)).toBe(false);
      });

      it("sets a plate's history retention, seen on another node, and clears it with null", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const history = { count: 7, ageMs: 30_000 };
        expect(await a.setPlateHistory(plate.id, history)).toEqual({ ...plate, history });
        expect(await b.getPlate(plate.id)).toEqual({ ...plate, history });
        expect(await b.setPlateHistory(plate.id, null)).toEqual(plate);
        expect(await a.getPlate(plate.id)).toEqual(plate);
      });

      it("sets a plate's own limits beside its history, seen on another node, and clears each without touching the other", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const history = { count: 7, ageMs: 30_000 };
        const limits = { publishPerS: 5, publishBytesPerS: 1000, connections: 3 };
        await a.setPlateHistory(plate.id, history);
        expect(await a.setPlateLimits(plate.id, limits)).toEqual({ ...plate, history, limits });
        expect(await b.getPlate(plate.id)).toEqual({ ...plate, history, limits });
        expect(await b.setPlateHistory(plate.id, null)).toEqual({ ...plate, limits });
        expect(await a.setPlateLimits(plate.id, null)).toEqual(plate);
        expect(await b.getPlate(plate.id)).toEqual(plate);
        expect(await b.setPlateLimits(`p-${uid()}` as PlateId, limits)).toBeUndefined();
      });

      it("sums usage from several nodes per plate and hour, each node's peak of connections counted once, and answers zeros for hours without any", async () => {
        const a = await node();
        const b = await node();
        const plate = `p-${uid()}` as PlateId;
        const other = `p-${uid()}` as PlateId;
        const day = new Date().toISOString().slice(0, 10);
        const [h1, h2, h3] = [`${day}T01`, `${day}T02`, `${day}T03`];
        const keepMs = 35 * 86_400_000;
        await a.usageAdd("node-a", [{ plateId: plate, hour: h1, counts: { published: 3, publishedBytes: 300 }, peakConnections: 4 }], keepMs);
        await b.usageAdd("node-b", [{ plateId: plate, hour: h1, counts: { published: 2, delivered: 10 }, peakConnections: 2 }], keepMs);
        // A node's later peak of the same hour replaces its earlier one.
        await a.usageAdd("node-a", [{ plateId: plate, hour: h1, counts: { delivered: 5, tokensMinted: 1 }, peakConnections: 6 }, { plateId: plate, hour: h2, counts: { published: 1 } }, { plateId: other, hour: h1, counts: { published: 7 } }], keepMs);
        expect(await b.usageRead(plate, [h1, h2, h3])).toEqual([
          { hour: h1, published: 5, publishedBytes: 300, delivered: 15, tokensMinted: 1, peakConnections: 8 },
          { hour: h2, published: 1, publishedBytes: 0, delivered: 0, tokensMinted: 0, peakConnections: 0 },
          { hour: h3, published: 0, publishedBytes: 0, delivered: 0, tokensMinted: 0, peakConnections: 0 },
        ]);
        expect((await a.usageRead(other, [h1]))[0]!.published).toBe(7);
      });

      it("takes a plate's rate tokens from one bucket shared by every node, per plate and name, and answers how long to wait past it", async () => {
        const a = await node();
        const b = await node();
        const plate = `p-${uid()}` as PlateId;
        const got: number[] = [];
        for (let i = 0; i < 6; i++) got.push(await (i % 2 === 0 ? a : b).takeRate(plate, "mint", 1, 4, 1));
        expect(got.slice(0, 4)).toEqual([0, 0, 0, 0]);
        expect(got[4]).toBeGreaterThan(0);
        expect(got[4]).toBeLessThanOrEqual(1000);
        // Another name, another plate, and a rate of 0: their own.
        expect(await a.takeRate(plate, "other", 1, 1, 1)).toBe(0);
        expect(await b.takeRate(`p-${uid()}` as PlateId, "mint", 1, 4, 4)).toBe(0);
        expect(await b.takeRate(plate, "mint", 0, 0, 100)).toBe(0);
        // More than the burst at once never passes; what it takes is nothing.
        expect(await a.takeRate(plate, "big", 1, 2, 3)).toBeGreaterThan(0);
        expect(await a.takeRate(plate, "big", 1, 2, 2)).toBe(0);
      });

      it("counts a plate's open connections over every node: each node's report holds until its lease ends, and goes with a report of 0", async () => {
        const a = await node();
        const b = await node();
        const plate = `p-${uid()}` as PlateId;
        const other = `p-${uid()}` as PlateId;
        expect(await a.reportConnections("node-a", new Map([[plate, 3]]), 400)).toEqual(new Map([[plate, 0]]));
        expect(await b.reportConnections("node-b", new Map([[plate, 2], [other, 1]]), 10_000)).toEqual(new Map([[plate, 3], [other, 0]]));
        expect(await a.reportConnections("node-c", new Map([[plate, 0]]), 10_000)).toEqual(new Map([[plate, 5]]));
        // node-a stops reporting (it died): once its lease ends, it no longer counts.
        await new Promise((r) => setTimeout(r, 500));
        expect(await b.reportConnections("node-b", new Map([[plate, 2]]), 10_000)).toEqual(new Map([[plate, 0]]));
        expect(await a.reportConnections("node-a", new Map([[plate, 1]]), 10_000)).toEqual(new Map([[plate, 2]]));
        expect(await a.reportConnections("node-b", new Map([[plate, 0]]), 10_000)).toEqual(new Map([[plate, 1]]));
      });

      it("answers undefined when setting the history of a plate that does not exist, and creates none", async () => {
        const store = await node();
        const id = `p-${uid()}` as PlateId;
        expect(await store.setPlateHistory(id, { count: 1, ageMs: 1000 })).toBeUndefined();
        expect(await store.getPlate(id)).toBeUndefined();
      });

      it("answers false when deleting a plate that never existed", async () => {
        const store = await node();
        expect(await store.deletePlate(`p-${uid()}` as PlateId)).toBe(false);
      });

      it("deletes a plate's keys with it, and only its keys", async () => {
        const a = await node();
        const b = await node();
        const doomed = plateRecord();
        const kept = plateRecord();
        await a.createPlate(doomed);
        await a.createPlate(kept);
        const one = keyRecord(doomed.id);
        const two = keyRecord(doomed.id);
        const other = keyRecord(kept.id);
        for (const { key } of [one, two, other]) await a.createKey(key);
        expect(await a.deletePlate(doomed.id)).toBe(true);
        expect(await b.findKey(one.key.plateId, one.key.hash)).toBeUndefined();
        expect(await b.findKey(two.key.plateId, two.key.hash)).toBeUndefined();
        expect(await b.listKeys(doomed.id)).toEqual([]);
        expect(await b.findKey(other.key.plateId, other.key.hash)).toEqual(other.key);
      });

      it("lets a deleted plate's id be used again, without its old keys", async () => {
        const store = await node();
        const plate = plateRecord("old");
        await store.createPlate(plate);
        const { key } = keyRecord(plate.id);
        await store.createKey(key);
        await store.deletePlate(plate.id);
        const again = { ...plate, name: "new" };
        expect(await store.createPlate(again)).toEqual(again);
        expect(await store.listKeys(plate.id)).toEqual([]);
        expect(await store.findKey(key.plateId, key.hash)).toBeUndefined();
      });
    });

    describe("keys", () => {
      it("refuses a key for a plate that does not exist with not_found", async () => {
        const store = await node();
        const { key } = keyRecord(`p-${uid()}` as PlateId);
        const err = await rejection(store.createKey(key));
        expect(err).toBeInstanceOf(PlateError);
        expect(codeOf(err)).toBe("not_found");
        expect(await store.findKey(key.plateId, key.hash)).toBeUndefined();
      });

      it("finds a key by the hash of its secret on any node, with every field as created", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const limited = keyRecord(plate.id, { scopes: ["subscribe"], channels: ["user:*", "room.?"], name: "web" });
        const open = keyRecord(plate.id, { scopes: ["publish", "client"], channels: null });
        expect(await a.createKey(limited.key)).toEqual(limited.key);
        await a.createKey(open.key);
        expect(await b.findKey(limited.key.plateId, limited.key.hash)).toEqual(limited.key);
        expect(await b.findKey(open.key.plateId, open.key.hash)).toEqual(open.key);
        expect((await b.findKey(open.key.plateId, open.key.hash))?.channels).toBeNull();
      });

      it("finds a key only through its own plate, and refuses its secret to a key of another plate", async () => {
        const store = await node();
        const owner = plateRecord();
        const other = plateRecord();
        await store.createPlate(owner);
        await store.createPlate(other);
        const { key } = keyRecord(owner.id);
        await store.createKey(key);
        expect(await store.findKey(other.id, key.hash)).toBeUndefined();
        expect(codeOf(await rejection(store.createKey({ ...key, id: `k-${uid()}`, plateId: other.id })))).toBe("conflict");
        expect(await store.findKey(other.id, key.hash)).toBeUndefined();
        expect(await store.findKey(owner.id, key.hash)).toEqual(key);
      });

      it("finds nothing for an unknown hash", async () => {
        const store = await node();
        const plate = plateRecord();
        await store.createPlate(plate);
        expect(await store.findKey(plate.id, createHash("sha256").update(uid()).digest("hex"))).toBeUndefined();
      });

      it("lists a plate's keys and never another plate's", async () => {
        const a = await node();
        const b = await node();
        const mine = plateRecord();
        const theirs = plateRecord();
        await a.createPlate(mine);
        await a.createPlate(theirs);
        const one = keyRecord(mine.id);
        const two = keyRecord(mine.id);
        const other = keyRecord(theirs.id);
        for (const { key } of [one, two, other]) await a.createKey(key);
        const byId = (x: KeyRecord, y: KeyRecord): number => x.id.localeCompare(y.id);
        expect((await b.listKeys(mine.id)).sort(byId)).toEqual([one.key, two.key].sort(byId));
        expect(await b.listKeys(theirs.id)).toEqual([other.key]);
        expect(await b.listKeys(`p-${uid()}` as PlateId)).toEqual([]);
      });

      it("revokes a key: true once, then false, and it is found nowhere", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const gone = keyRecord(plate.id);
        const stays = keyRecord(plate.id);
        await a.createKey(gone.key);
        await a.createKey(stays.key);
        expect(await b.deleteKey(plate.id, gone.key.id)).toBe(true);
        expect(await a.findKey(gone.key.plateId, gone.key.hash)).toBeUndefined();
        expect(await a.listKeys(plate.id)).toEqual([stays.key]);
        expect(await a.deleteKey(plate.id, gone.key.id)).toBe(false);
      });

      it("does not revoke a key through another plate's id", async () => {
        const store = await node();
        const owner = plateRecord();
        const intruder = plateRecord();
        await store.createPlate(owner);
        await store.createPlate(intruder);
        const { key } = keyRecord(owner.id);
        await store.createKey(key);
        expect(await store.deleteKey(intruder.id, key.id)).toBe(false);
        expect(await store.findKey(key.plateId, key.hash)).toEqual(key);
      });

      it("answers false when revoking a key that never existed", async () => {
        const store = await node();
        const plate = plateRecord();
        await store.createPlate(plate);
        expect(await store.deleteKey(plate.id, `k-${uid()}`)).toBe(false);
      });
    });

    describe("revocations", () => {
      it("announces a revoked key to listeners on every node within a second", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const { key } = keyRecord(plate.id);
        await a.createKey(key);
        const onA = revocations(a);
        const onB = revocations(b);
        await a.deleteKey(plate.id, key.id);
        const match = (r: Revocation): boolean => r.plateId === plate.id && r.keyId === key.id;
        expect(await onB.until(match)).toEqual({ plateId: plate.id, keyId: key.id });
        expect(await onA.until(match)).toEqual({ plateId: plate.id, keyId: key.id });
        onA.stop();
        onB.stop();
      });

      it("announces a deleted plate, without a key id, to listeners on every node within a second", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        await a.createKey(keyRecord(plate.id).key);
        const onB = revocations(b);
        await a.deletePlate(plate.id);
        const heard = await onB.until((r) => r.plateId === plate.id && r.keyId === undefined);
        expect(heard).toBeDefined();
        expect(heard?.keyId).toBeUndefined();
        onB.stop();
      });

      it("announces nothing for a delete that deleted nothing", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const onB = revocations(b);
        await a.deleteKey(plate.id, `k-${uid()}`);
        await a.deletePlate(`p-${uid()}` as PlateId);
        await settle();
        expect(onB.heard.filter((r) => r.plateId === plate.id)).toEqual([]);
        onB.stop();
      });

      it("is ready once open, and tells no resync listener while nothing was cut", async () => {
        const a = await node();
        const b = await node();
        let resyncs = 0;
        const stop = b.onResync(() => (resyncs += 1));
        expect(a.isReady() && b.isReady()).toBe(true);
        const plate = plateRecord();
        await a.createPlate(plate);
        await a.deletePlate(plate.id);
        await settle();
        expect(resyncs).toBe(0);
        stop();
      });

      it("stops telling a listener once it has unsubscribed, and keeps telling the others", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const { key } = keyRecord(plate.id);
        await a.createKey(key);
        const gone = revocations(b);
        const stays = revocations(b);
        gone.stop();
        gone.stop();
        await a.deleteKey(plate.id, key.id);
        expect(await stays.until((r) => r.keyId === key.id)).toBeDefined();
        await settle();
        expect(gone.heard).toEqual([]);
        stays.stop();
      });
    });

    describe("signing keys", () => {
      function signingKey(plateId: PlateId, alg: SigningKeyRecord["alg"] = "HS256"): SigningKeyRecord {
        return { id: `sk-${uid()}`, plateId, alg, key: randomBytes(32).toString("base64url"), createdAt: new Date().toISOString() };
      }

      it("adds signing keys to a plate, finds and lists them on another node, and deletes one: true once, then false", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        const hs = signingKey(plate.id);
        const es = { ...signingKey(plate.id, "ES256"), key: "-----BEGIN PUBLIC KEY-----\nMFk=\n-----END PUBLIC KEY-----\n" };
        expect(await a.createSigningKey(hs)).toEqual(hs);
        await a.createSigningKey(es);
        expect(await b.findSigningKey(plate.id, hs.id)).toEqual(hs);
        const byId = (x: SigningKeyRecord, y: SigningKeyRecord): number => x.id.localeCompare(y.id);
        expect((await b.listSigningKeys(plate.id)).sort(byId)).toEqual([hs, es].sort(byId));
        const onA = revocations(a);
        expect(await b.deleteSigningKey(plate.id, hs.id)).toBe(true);
        expect(await onA.until((r) => r.keyId === signingKeyOwner(hs.id))).toEqual({ plateId: plate.id, keyId: signingKeyOwner(hs.id) });
        onA.stop();
        expect(await a.deleteSigningKey(plate.id, hs.id)).toBe(false);
        expect(await a.findSigningKey(plate.id, hs.id)).toBeUndefined();
        expect(await a.listSigningKeys(plate.id)).toEqual([es]);
      });

      it("refuses a signing key for a plate that does not exist, an id taken in the plate, and finds none through another plate", async () => {
        const store = await node();
        const plate = plateRecord();
        const other = plateRecord();
        await store.createPlate(plate);
        await store.createPlate(other);
        expect(codeOf(await rejection(store.createSigningKey(signingKey(`p-${uid()}` as PlateId))))).toBe("not_found");
        const key = signingKey(plate.id);
        await store.createSigningKey(key);
        expect(codeOf(await rejection(store.createSigningKey({ ...key, key: "another" })))).toBe("conflict");
        expect(await store.findSigningKey(other.id, key.id)).toBeUndefined();
        expect(await store.deleteSigningKey(other.id, key.id)).toBe(false);
        expect(await store.findSigningKey(plate.id, key.id)).toEqual(key);
      });

      it("deletes a plate's signing keys with it: a plate made again with that id has none", async () => {
        const store = await node();
        const plate = plateRecord();
        await store.createPlate(plate);
        const key = signingKey(plate.id);
        await store.createSigningKey(key);
        await store.deletePlate(plate.id);
        await store.createPlate(plate);
        expect(await store.findSigningKey(plate.id, key.id)).toBeUndefined();
        expect(await store.listSigningKeys(plate.id)).toEqual([]);
      });
    });

    describe("webhooks", () => {
      const hook = (plateId: PlateId, url = "https://example.test/hook"): WebhookRecord => ({
        plateId,
        url,
        secret: randomBytes(32).toString("base64url"),
        events: ["member_added", "member_removed"],
        createdAt: new Date().toISOString(),
      });

      it("sets, replaces, reads on another node and deletes a plate's one webhook; refuses one for a plate that does not exist", async () => {
        const a = await node();
        const b = await node();
        const plate = plateRecord();
        await a.createPlate(plate);
        expect(await b.getWebhook(plate.id)).toBeUndefined();
        const first = hook(plate.id);
        expect(await a.setWebhook(first)).toEqual(first);
        expect(await b.getWebhook(plate.id)).toEqual(first);
        const second = hook(plate.id, "https://example.test/other");
        await b.setWebhook(second);
        expect(await a.getWebhook(plate.id)).toEqual(second);
        expect(await a.deleteWebhook(plate.id)).toBe(true);
        expect(await b.deleteWebhook(plate.id)).toBe(false);
        expect(await b.getWebhook(plate.id)).toBeUndefined();
        expect(codeOf(await rejection(a.setWebhook(hook(`p-${uid()}` as PlateId))))).toBe("not_found");
      });

      it("queues a plate's events for one node at a time: claimed in order, held for the lease, retried after a wait with the attempt counted, removed when done", async () => {
        const a = await node();
        const b = await node();
        const plate = `q-${uid()}` as PlateId;
        await a.webhookPush(plate, ['{"n":1}', '{"n":2}'], 100);
        await a.webhookPush(plate, ['{"n":3}'], 100);
        expect(await b.webhookWaiting(1000)).toContain(plate);
        const first = await b.webhookClaim(plate, 2, 5_000);
        expect(first?.events).toEqual(['{"n":1}', '{"n":2}']);
        expect(first?.attempts).toBe(0);
        // Held by b: nobody else gets them meanwhile.
        expect(await a.webhookClaim(plate, 2, 5_000)).toBeUndefined();
        await b.webhookDone(plate, first!.ids);
        const second = await a.webhookClaim(plate, 2, 5_000);
        expect(second?.events).toEqual(['{"n":3}']);
        await a.webhookRetry(plate, 150);
        expect(await b.webhookClaim(plate, 2, 5_000)).toBeUndefined();
        await sleep(200);
        const again = await b.webhookClaim(plate, 2, 50);
        expect([again?.events, again?.attempts]).toEqual([['{"n":3}'], 1]);
        // b never answers: after its lease another node takes them.
        await sleep(100);
        const taken = await a.webhookClaim(plate, 2, 5_000);
        expect(taken?.ids).toEqual(again?.ids);
        await a.webhookDone(plate, taken!.ids);
        expect(await a.webhookClaim(plate, 2, 5_000)).toBeUndefined();
        expect(await b.webhookWaiting(1000)).not.toContain(plate);
      });

      it("keeps at most max events of a plate waiting", async () => {
        const store = await node();
        const plate = `q-${uid()}` as PlateId;
        const events = Array.from({ length: 300 }, (_, i) => `{"n":${i}}`);
        await store.webhookPush(plate, events, 100);
        const claimed = await store.webhookClaim(plate, 1000, 5_000);
        // Redis trims approximately (whole nodes of the stream): about max, never all of them, the newest kept.
        expect(claimed!.events.length).toBeGreaterThanOrEqual(100);
        expect(claimed!.events.length).toBeLessThan(300);
        expect(claimed!.events.at(-1)).toBe('{"n":299}');
      });

      it("deletes a plate's webhook with it", async () => {
        const store = await node();
        const plate = plateRecord();
        await store.createPlate(plate);
        await store.setWebhook(hook(plate.id));
        await store.deletePlate(plate.id);
        await store.createPlate(plate);
        expect(await store.getWebhook(plate.id)).toBeUndefined();
      });
    });

    describe("client tokens", () => {
      async function plateWithKey(store: Store): Promise<{ plate: PlateRecord; key: KeyRecord }> {
        const plate = plateRecord();
        await store.createPlate(plate);
        const { key } = keyRecord(plate.id);
        await store.createKey(key);
        return { plate, key };
      }

      it("claims a fresh token on another node, answering the token and the use it spent", async () => {
        const a = await node();
        const b = await node();
        const { plate, key } = await plateWithKey(a);
        const token = tokenRecord(plate.id, key.id, { maxUses: 3, pattern: true });
        await a.putToken(token);
        const result = await b.claimToken(plate.id, token.token, Date.now());
        expect(result).toEqual({ ok: true, token, uses: 1 });
        expect(await a.claimToken(plate.id, token.token, Date.now())).toEqual({ ok: true, token, uses: 2 });
      });

      it("keeps a plate's client tokens within its byte budget over every node, each counted until it is forgotten", async () => {
        const a = await node();
        const b = await node();
        const { plate, key } = await plateWithKey(a);
        const size = JSON.stringify(tokenRecord(plate.id, key.id)).length + TOKEN_COST.overhead;
        const budget = 3 * size + 10;
        for (let i = 0; i < 3; i++) expect(await (i % 2 === 0 ? a : b).putToken(tokenRecord(plate.id, key.id), budget)).toBe(true);
        const refused = tokenRecord(plate.id, key.id);
        expect(await b.putToken(refused, budget)).toBe(false);
        // Nothing of a refused token is stored.
        expect(failureCode(await a.claimToken(plate.id, refused.token, Date.now()))).toBe("invalid_client_socket");
        // Another plate has its own budget; without a budget nothing is refused.
        const other = await plateWithKey(a);
        expect(await a.putToken(tokenRecord(other.plate.id, other.key.id), budget)).toBe(true);
        expect(await a.putToken(tokenRecord(plate.id, key.id))).toBe(true);
        // A token whose expiry and tombstone (1 s in these stores) passed stops counting.
        const third = await plateWithKey(a);
        const old = tokenRecord(third.plate.id, third.key.id, { expiresAt: Date.now() - 1500 });
        expect(await a.putToken(old, size + 10)).toBe(true);
        expect(await b.putToken(tokenRecord(third.plate.id, third.key.id), size + 10)).toBe(true);
      });

      it("claims an unknown token as invalid_client_socket", async () => {
        const store = await node();
        const { plate } = await plateWithKey(store);
        const unknown = randomBytes(24).toString("base64url") as ClientToken;
        expect(failureCode(await store.claimToken(plate.id, unknown, Date.now()))).toBe("invalid_client_socket");
      });

      it("claims a token through another plate as invalid_client_socket, without spending a use", async () => {
        const a = await node();
        const b = await node();
        const { plate, key } = await plateWithKey(a);
        const other = await plateWithKey(a);
        const token = tokenRecord(plate.id, key.id, { maxUses: 1 });
        await a.putToken(token);
        expect(failureCode(await b.claimToken(other.plate.id, token.token, Date.now()))).toBe("invalid_client_socket");
        expect(failureCode(await b.claimToken(`p-${uid()}` as PlateId, token.token, Date.now()))).toBe(
          "invalid_client_socket",
        );
        expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("ok");
      });

      it.each([1, 7])(
        "lets exactly %i of 50 concurrent claims across nodes succeed, then refuses as exhausted",
        async (maxUses) => {
          const a = await node();
          const b = await node();
          const { plate, key } = await plateWithKey(a);
          const token = tokenRecord(plate.id, key.id, { maxUses });
          await a.putToken(token);
          const results = await Promise.all(
            Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? a : b).claimToken(plate.id, token.token, Date.now())),
          );
          const uses = results.flatMap((r) => (r.ok ? [r.uses] : []));
          expect(uses.sort((x, y) => x - y)).toEqual(Array.from({ length: maxUses }, (_, i) => i + 1));
          const refusals = results.filter((r) => !r.ok).map(failureCode);
          expect(refusals).toEqual(Array.from({ length: 50 - maxUses }, () => "exhausted_client_socket"));
          expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("exhausted_client_socket");
        },
      );

      it("never runs out of uses with maxUses 0", async () => {
        const a = await node();
        const b = await node();
        const { plate, key } = await plateWithKey(a);
        const token = tokenRecord(plate.id, key.id, { maxUses: 0 });
        await a.putToken(token);
        const concurrent = await Promise.all(
          Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? a : b).claimToken(plate.id, token.token, Date.now())),
        );
        expect(concurrent.map(failureCode)).toEqual(Array.from({ length: 50 }, () => "ok"));
        for (let i = 0; i < 50; i++) {
          expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("ok");
        }
      });

      it("claims a token as expired_client_socket from expiresAt on, and not a millisecond before", async () => {
        const a = await node();
        const b = await node();
        const { tokenTombstoneMs } = await open();
        const { plate, key } = await plateWithKey(a);
        const token = tokenRecord(plate.id, key.id, { maxUses: 0, expiresAt: Date.now() + 60_000 });
        await a.putToken(token);
        expect(failureCode(await b.claimToken(plate.id, token.token, token.expiresAt - 1))).toBe("ok");
        expect(failureCode(await b.claimToken(plate.id, token.token, token.expiresAt))).toBe("expired_client_socket");
        expect(failureCode(await a.claimToken(plate.id, token.token, token.expiresAt + 1))).toBe(
          "expired_client_socket",
        );
        expect(failureCode(await a.claimToken(plate.id, token.token, token.expiresAt + tokenTombstoneMs - 1))).toBe(
          "expired_client_socket",
        );
      });

      it("claims an expired token as invalid_client_socket once its tombstone has passed", async () => {
        // Real time, not just `nowMs`: an implementation may let its backing store expire the token.
        const a = await node();
        const b = await node();
        const { tokenTombstoneMs } = await open();
        const { plate, key } = await plateWithKey(a);
        const token = tokenRecord(plate.id, key.id, { maxUses: 0, expiresAt: Date.now() + 50 });
        await a.putToken(token);
        await sleepUntil(token.expiresAt);
        expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("expired_client_socket");
        await sleepUntil(token.expiresAt + tokenTombstoneMs + 50);
        expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("invalid_client_socket");
      }, 10_000);

      it("claims a token whose key was revoked as invalid_client_socket", async () => {
        const a = await node();
        const b = await node();
        const { plate, key } = await plateWithKey(a);
        const token = tokenRecord(plate.id, key.id, { maxUses: 0 });
        await a.putToken(token);
        expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("ok");
        await a.deleteKey(plate.id, key.id);
        expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("invalid_client_socket");
      });

      it("claims a token whose plate was deleted as invalid_client_socket", async () => {
        const a = await node();
        const b = await node();
        const { plate, key } = await plateWithKey(a);
        const token = tokenRecord(plate.id, key.id, { maxUses: 0 });
        await a.putToken(token);
        await a.deletePlate(plate.id);
        expect(failureCode(await b.claimToken(plate.id, token.token, Date.now()))).toBe("invalid_client_socket");
      });

      it("keeps the uses of two tokens apart", async () => {
        const store = await node();
        const { plate, key } = await plateWithKey(store);
        const first = tokenRecord(plate.id, key.id, { maxUses: 1 });
        const second = tokenRecord(plate.id, key.id, { maxUses: 1 });
        await store.putToken(first);
        await store.putToken(second);
        expect(failureCode(await store.claimToken(plate.id, first.token, Date.now()))).toBe("ok");
        expect(failureCode(await store.claimToken(plate.id, second.token, Date.now()))).toBe("ok");
        expect(failureCode(await store.claimToken(plate.id, first.token, Date.now()))).toBe("exhausted_client_socket");
      });
    });
  });
}
