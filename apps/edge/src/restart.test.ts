import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminCall } from "./test-support/admin.js";
import { KEYS, publish, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { SseClient } from "./test-support/sse.js";

/** The embedded default's data file in `DATA_DIR`. */
const DATA_FILE = "plates.json";

describe("a restart on the same DATA_DIR keeps plates and keys", () => {
  const nodes: TestNode[] = [];
  let first: TestNode;
  let plateKey: { id: string; secret: string };
  let extraKey: { id: string; secret: string; name: string };

  beforeAll(async () => {
    first = await startTestNode();
    nodes.push(first);
    const plate = await adminCall(first.url, "POST", "/admin/plates", { body: { id: "kept", name: "Kept" } });
    expect(plate.status).toBe(201);
    plateKey = plate.body.data.key;
    const key = await adminCall(first.url, "POST", "/admin/plates/kept/keys", {
      body: { scopes: ["publish"], channels: ["orders:*"], name: "writer" },
    });
    expect(key.status).toBe(201);
    extraKey = key.body.data;
    await first.stop();
  });
  afterAll(async () => {
    for (const node of nodes) await node.cleanup();
  });

  it("stores only hashes of the secrets in the data file, never a secret", async () => {
    const text = await readFile(join(first.dataDir, DATA_FILE), "utf8");
    for (const secret of [plateKey.secret, extraKey.secret, KEYS.acme, KEYS.globex]) {
      expect(text).not.toContain(secret);
    }
    const data = JSON.parse(text);
    expect(data.keys.length).toBe(4);
    for (const key of data.keys) {
      expect(key).not.toHaveProperty("secret");
      expect(typeof key.hash).toBe("string");
      expect(key.hash.length).toBeGreaterThanOrEqual(32);
    }
  });

  it("lists the plate and accepts its keys, with their limits, after the restart", async () => {
    const second = await startTestNode({}, first.dataDir);
    nodes.push(second);
    const plates = await adminCall(second.url, "GET", "/admin/plates");
    expect(plates.body.data.find((p: any) => p.id === "kept")).toEqual({
      id: "kept",
      name: "Kept",
      createdAt: expect.any(String),
    });
    const keys = await adminCall(second.url, "GET", "/admin/plates/kept/keys");
    expect(keys.body.data.map((k: any) => k.id).sort()).toEqual([plateKey.id, extraKey.id].sort());
    expect(keys.body.data.find((k: any) => k.id === extraKey.id)).toMatchObject({
      name: "writer",
      scopes: ["publish"],
      channels: ["orders:*"],
    });

    const sub = await SseClient.open(`${second.url}/kept/pubsub/orders:1/subscribe`, {
      Authorization: `Bearer ${plateKey.secret}`,
    });
    await sub.waitFor("ready");
    const published = await publish(second.url, "kept", "orders:1", { after: "restart" }, extraKey.secret);
    expect(published.status).toBe(200);
    const [envelope] = await sub.waitForMessages(1);
    expect(envelope).toMatchObject({ id: published.body.data.id, message: { after: "restart" } });
    sub.close();
    const forbidden = await publish(second.url, "kept", "users:1", "no", extraKey.secret);
    expect(forbidden.status).toBe(403);
    expect(forbidden.body.error.code).toBe("forbidden");
    await second.stop();
  });

  it("keeps a revoked key revoked and a deleted plate deleted across a restart", async () => {
    const third = await startTestNode({}, first.dataDir);
    nodes.push(third);
    await adminCall(third.url, "POST", "/admin/plates", { body: { id: "temporary" } });
    expect((await adminCall(third.url, "DELETE", `/admin/plates/kept/keys/${extraKey.id}`)).status).toBe(204);
    expect((await adminCall(third.url, "DELETE", "/admin/plates/temporary")).status).toBe(204);
    await third.stop();

    const fourth = await startTestNode({}, first.dataDir);
    nodes.push(fourth);
    const revoked = await publish(fourth.url, "kept", "orders:1", "no", extraKey.secret);
    expect(revoked.status).toBe(401);
    expect(revoked.body.error.code).toBe("invalid_api_key");
    expect((await publish(fourth.url, "kept", "orders:1", "yes", plateKey.secret)).status).toBe(200);
    expect((await adminCall(fourth.url, "GET", "/admin/plates/temporary")).status).toBe(404);
    await fourth.stop();
  });
});

describe("BOOTSTRAP_PLATES across restarts", () => {
  const nodes: TestNode[] = [];
  let dataDir: string;

  beforeAll(async () => {
    const node = await startTestNode();
    nodes.push(node);
    dataDir = node.dataDir;
  });
  afterAll(async () => {
    for (const node of nodes) await node.cleanup();
  });

  /** Ids of a plate's keys, as the admin API lists them. */
  async function keyIds(base: string, plate: string): Promise<string[]> {
    const res = await adminCall(base, "GET", `/admin/plates/${plate}/keys`);
    expect(res.status).toBe(200);
    return res.body.data.map((k: any) => k.id).sort();
  }

  it("creates no duplicate plate or key when a node restarts with the same BOOTSTRAP_PLATES", async () => {
    const first = nodes[0]!;
    const acmeKeys = await keyIds(first.url, "acme");
    const globexKeys = await keyIds(first.url, "globex");
    expect(acmeKeys).toHaveLength(1);
    expect(globexKeys).toHaveLength(1);
    await first.stop();

    for (let restart = 0; restart < 2; restart++) {
      const node = await startTestNode({}, dataDir);
      nodes.push(node);
      expect(await keyIds(node.url, "acme")).toEqual(acmeKeys);
      expect(await keyIds(node.url, "globex")).toEqual(globexKeys);
      const plates = (await adminCall(node.url, "GET", "/admin/plates")).body.data.map((p: any) => p.id);
      expect(plates.filter((id: string) => id === "acme")).toHaveLength(1);
      expect(plates.filter((id: string) => id === "globex")).toHaveLength(1);
      expect((await publish(node.url, "acme", "alerts", restart)).status).toBe(200);
      expect((await publish(node.url, "globex", "alerts", restart, KEYS.globex)).status).toBe(200);
      await node.stop();
    }
  });

  it("adds a plate newly listed in BOOTSTRAP_PLATES and keeps the ones already there", async () => {
    const initech = "initech-secret-0123456789abcdef";
    const node = await startTestNode({ BOOTSTRAP_PLATES: JSON.stringify({ ...KEYS, initech }) }, dataDir);
    nodes.push(node);
    expect((await publish(node.url, "initech", "alerts", 1, initech)).status).toBe(200);
    expect((await publish(node.url, "acme", "alerts", 1)).status).toBe(200);
    expect(await keyIds(node.url, "initech")).toHaveLength(1);
    expect(await keyIds(node.url, "acme")).toHaveLength(1);
    await node.stop();
  });

  it("restores a bootstrapped plate that was deleted, with its key, at the next start", async () => {
    const node = await startTestNode({}, dataDir);
    nodes.push(node);
    expect((await adminCall(node.url, "DELETE", "/admin/plates/globex")).status).toBe(204);
    expect((await publish(node.url, "globex", "alerts", 1, KEYS.globex)).status).toBe(401);
    await node.stop();

    const next = await startTestNode({}, dataDir);
    nodes.push(next);
    expect((await adminCall(next.url, "GET", "/admin/plates/globex")).status).toBe(200);
    expect(await keyIds(next.url, "globex")).toHaveLength(1);
    expect((await publish(next.url, "globex", "alerts", 1, KEYS.globex)).status).toBe(200);
    await next.stop();
  });
});
