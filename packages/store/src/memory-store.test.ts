import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { ChannelPattern, ClientToken, PlateId } from "@plate/protocol";
import { MemoryStore } from "./memory-store.js";
import type { KeyRecord, PlateRecord } from "./store.js";
import { runStoreContract } from "./store.contract.js";

const TOKEN_TOMBSTONE_MS = 1000;
const TOKEN_SWEEP_MS = 60_000;

runStoreContract("memory", async () => {
  // One process is one node: every "node" of the fixture is the same embedded store.
  const store = await MemoryStore.open({ tokenTombstoneMs: TOKEN_TOMBSTONE_MS, tokenSweepMs: TOKEN_SWEEP_MS });
  return {
    node: () => Promise.resolve(store),
    close: () => store.close(),
    tokenTombstoneMs: TOKEN_TOMBSTONE_MS,
  };
});

describe("memory store persistence", () => {
  const dirs: string[] = [];
  const stores: MemoryStore[] = [];

  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "plate-store-test-"));
    dirs.push(dir);
    return dir;
  }

  async function openAt(dataDir: string): Promise<MemoryStore> {
    const store = await MemoryStore.open({
      dataDir,
      tokenTombstoneMs: TOKEN_TOMBSTONE_MS,
      tokenSweepMs: TOKEN_SWEEP_MS,
    });
    stores.push(store);
    return store;
  }

  /** Closes a store opened by `openAt` (so `afterEach` does not close it twice). */
  async function closeStore(store: MemoryStore): Promise<void> {
    stores.splice(stores.indexOf(store), 1);
    await store.close();
  }

  function plate(id: string, name = id): PlateRecord {
    return { id: id as PlateId, name, createdAt: "2026-03-15T12:00:00.000Z" };
  }

  function key(plateId: string, id: string, channels: string[] | null = null): { record: KeyRecord; secret: string } {
    const secret = `sk_${randomBytes(24).toString("base64url")}`;
    return {
      secret,
      record: {
        id,
        plateId: plateId as PlateId,
        name: `key ${id}`,
        scopes: ["publish", "subscribe"],
        channels: channels === null ? null : channels.map((c) => c as ChannelPattern),
        hash: createHash("sha256").update(secret).digest("hex"),
        createdAt: "2026-03-15T12:00:00.000Z",
      },
    };
  }

  const byId = <T extends { id: string }>(x: T, y: T): number => x.id.localeCompare(y.id);

  it("starts empty in a fresh folder, creating the folder if needed", async () => {
    const dir = join(await tempDir(), "nested", "data");
    const store = await openAt(dir);
    expect(await store.listPlates()).toEqual([]);
    expect((await stat(dir)).isDirectory()).toBe(true);
  });

  it("keeps plates and keys across a close and a reopen", async () => {
    const dir = await tempDir();
    const first = await openAt(dir);
    const acme = plate("acme", "Acme Inc.");
    const demo = plate("demo");
    await first.createPlate(acme);
    await first.createPlate(demo);
    const limited = key("acme", "k1", ["user:*", "room.?"]);
    const open = key("acme", "k2");
    const other = key("demo", "k3");
    for (const k of [limited, open, other]) await first.createKey(k.record);
    const signing = { id: "sk1", plateId: acme.id, alg: "HS256", key: "c2VjcmV0", createdAt: "2026-12-02T00:00:00.000Z" } as const;
    await first.createSigningKey(signing);
    await closeStore(first);

    const second = await openAt(dir);
    expect(await second.listSigningKeys(acme.id)).toEqual([signing]);
    expect((await second.listPlates()).sort(byId)).toEqual([acme, demo]);
    expect(await second.getPlate(acme.id)).toEqual(acme);
    expect((await second.listKeys(acme.id)).sort(byId)).toEqual([limited.record, open.record]);
    expect(await second.listKeys(demo.id)).toEqual([other.record]);
    expect(await second.findKey(limited.record.plateId, limited.record.hash)).toEqual(limited.record);
  });

  it("keeps deletions across a reopen", async () => {
    const dir = await tempDir();
    const first = await openAt(dir);
    await first.createPlate(plate("gone"));
    await first.createPlate(plate("stays"));
    const goneKey = key("gone", "k1");
    const revoked = key("stays", "k2");
    const kept = key("stays", "k3");
    for (const k of [goneKey, revoked, kept]) await first.createKey(k.record);
    await first.deletePlate("gone" as PlateId);
    await first.deleteKey("stays" as PlateId, "k2");
    await closeStore(first);

    const second = await openAt(dir);
    expect((await second.listPlates()).map((p) => p.id)).toEqual(["stays"]);
    expect(await second.findKey(goneKey.record.plateId, goneKey.record.hash)).toBeUndefined();
    expect(await second.findKey(revoked.record.plateId, revoked.record.hash)).toBeUndefined();
    expect(await second.listKeys("stays" as PlateId)).toEqual([kept.record]);
  });

  it("refuses a duplicate plate id after a reopen", async () => {
    const dir = await tempDir();
    const first = await openAt(dir);
    await first.createPlate(plate("acme"));
    await closeStore(first);
    const second = await openAt(dir);
    await expect(second.createPlate(plate("acme"))).rejects.toMatchObject({ code: "conflict" });
  });

  it("finishes writes still pending when close is called", async () => {
    const dir = await tempDir();
    const first = await openAt(dir);
    const pending = Array.from({ length: 5 }, (_, i) => first.createPlate(plate(`p${i}`)));
    await closeStore(first);
    await Promise.all(pending);
    const second = await openAt(dir);
    expect((await second.listPlates()).map((p) => p.id).sort()).toEqual(["p0", "p1", "p2", "p3", "p4"]);
  });

  it("never writes a key's secret to disk, only its hash", async () => {
    const dir = await tempDir();
    const store = await openAt(dir);
    await store.createPlate(plate("acme"));
    const keys = [key("acme", "k1"), key("acme", "k2", ["user:*"])];
    for (const k of keys) await store.createKey(k.record);
    await closeStore(store);

    const files = await readdir(dir);
    expect(files).toContain("plates.json");
    const contents = await Promise.all(files.map((f) => readFile(join(dir, f), "utf8")));
    const everything = contents.join("\n");
    for (const k of keys) {
      expect(everything).not.toContain(k.secret);
      expect(everything).toContain(k.record.hash);
    }
  });

  it("keeps the data file readable by its owner only", async () => {
    const dir = await tempDir();
    const store = await openAt(dir);
    await store.createPlate(plate("acme"));
    const mode = (await stat(join(dir, "plates.json"))).mode;
    expect(mode & 0o077).toBe(0);
  });

  it("leaves no .tmp file behind after many writes, concurrent ones included", async () => {
    const dir = await tempDir();
    const store = await openAt(dir);
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.createPlate(plate(`p${i}`))));
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.createKey(key(`p${i}`, `k${i}`).record)));
    await Promise.all(Array.from({ length: 10 }, (_, i) => store.deletePlate(`p${i}` as PlateId)));
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    await closeStore(store);
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);

    const reopened = await openAt(dir);
    expect((await reopened.listPlates()).map((p) => p.id).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `p${i + 10}`).sort(),
    );
    expect(await reopened.listKeys("p15" as PlateId)).toHaveLength(1);
  });

  it("refuses to open over a corrupt plates.json, naming the file and leaving it as it was", async () => {
    const dir = await tempDir();
    const file = join(dir, "plates.json");
    await writeFile(file, '{"version":1,"plates":[{"id":"acme"', "utf8");
    const err = await MemoryStore.open({
      dataDir: dir,
      tokenTombstoneMs: TOKEN_TOMBSTONE_MS,
      tokenSweepMs: TOKEN_SWEEP_MS,
    }).then(
      (store) => {
        stores.push(store);
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(file);
    expect(await readFile(file, "utf8")).toBe('{"version":1,"plates":[{"id":"acme"');
  });

  it.each([
    ["an unknown version", '{"version":2,"plates":[],"keys":[]}'],
    ["no keys", '{"version":1,"plates":[]}'],
    ["an array", "[]"],
    ["null", "null"],
  ])("refuses to open over a plates.json with %s, naming the file", async (_label, text) => {
    const dir = await tempDir();
    const file = join(dir, "plates.json");
    await writeFile(file, text, "utf8");
    const err = await MemoryStore.open({
      dataDir: dir,
      tokenTombstoneMs: TOKEN_TOMBSTONE_MS,
      tokenSweepMs: TOKEN_SWEEP_MS,
    }).then(
      (store) => {
        stores.push(store);
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(file);
  });

  it("forgets client tokens on restart (they live in memory only)", async () => {
    const dir = await tempDir();
    const first = await openAt(dir);
    await first.createPlate(plate("acme"));
    await first.createKey(key("acme", "k1").record);
    const token = randomBytes(24).toString("base64url") as ClientToken;
    await first.putToken({
      token,
      plateId: "acme" as PlateId,
      channel: "alerts" as ChannelPattern,
      pattern: false,
      keyId: "k1",
      maxDurationMs: 0,
      maxUses: 0,
      expiresAt: Date.now() + 60_000,
    });
    await closeStore(first);
    const second = await openAt(dir);
    expect(await second.claimToken("acme" as PlateId, token, Date.now())).toEqual({
      ok: false,
      code: "invalid_client_socket",
    });
  });
});
