import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "@plate/testing";

/**
 * `plate` as operators run it (`node apps/cli/dist/main.js`, the package's bin) against a real
 * node (`node apps/edge/dist/main.js`), both built before the tests run.
 */
const CLI = fileURLToPath(new URL("../dist/main.js", import.meta.url));
const EDGE = fileURLToPath(new URL("../../edge/dist/main.js", import.meta.url));
const ADMIN_TOKEN = "cli-admin-token-0123456789abcdef";

let node: ChildProcess;
let url: string;
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "plate-cli-"));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  node = spawn(process.execPath, [EDGE], {
    env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dataDir, ADMIN_TOKEN, DEMO_PLATE: "false", LOG_LEVEL: "warn", REDIS_URL: "" },
    stdio: "ignore",
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error("the edge node did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
});

afterAll(async () => {
  node?.kill("SIGKILL");
  await rm(dataDir, { recursive: true, force: true });
});

interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `plate ...args` with the node's URL and admin token in the environment. */
function plate(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { ...process.env, PLATE_URL: url, PLATE_ADMIN_TOKEN: ADMIN_TOKEN, ...env } },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr }),
    );
  });
}

describe("the plate command line", () => {
  let secret: string;

  it("creates a plate and prints its table row and its first key's secret once", async () => {
    const created = await plate(["plates", "create", "--id", "shop", "--name", "The shop", "--history-count", "20", "--history-age-ms", "60000"]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^ID\s+NAME\s+CREATED\s+HISTORY$/m);
    expect(created.stdout).toMatch(/^shop\s+The shop\s+\S+\s+20 msgs, 60000 ms$/m);
    secret = /^(pk_\S+)$/m.exec(created.stdout)![1]!;
    const published = await fetch(`${url}/shop/pubsub/orders/publish`, {
      method: "POST",
      headers: { Authorization: `Bearer ${secret}`, "Content-Type": "application/json" },
      body: JSON.stringify({ message: "works" }),
    });
    expect(published.status).toBe(200);
  });

  it("lists plates, and prints the API's data with --json", async () => {
    const listed = await plate(["plates", "list"]);
    expect(listed.stdout).toMatch(/^shop\s+The shop/m);
    const json = await plate(["plates", "list", "--json"]);
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ id: "shop", name: "The shop", history: { count: 20, ageMs: 60_000 } })]);
  });

  it("creates a limited key, lists keys without secrets, and revokes one so it stops working", async () => {
    const created = await plate(["keys", "create", "shop", "--name", "reader", "--scopes", "subscribe", "--channels", "orders:*,alerts", "--json"]);
    expect(created.code, created.stderr).toBe(0);
    const key = JSON.parse(created.stdout) as { id: string; secret: string; scopes: string[]; channels: string[] };
    expect(key).toMatchObject({ scopes: ["subscribe"], channels: ["orders:*", "alerts"] });
    const listed = await plate(["keys", "list", "shop"]);
    expect(listed.stdout).toMatch(new RegExp(`^${key.id}\\s+reader\\s+subscribe\\s+orders:\\*,alerts`, "m"));
    expect(listed.stdout).not.toContain(key.secret);
    expect(listed.stdout).not.toContain(secret);
    const revoked = await plate(["keys", "revoke", "shop", key.id]);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toContain(`revoked key ${key.id}`);
    const refused = await fetch(`${url}/shop/pubsub/alerts/client`, { headers: { Authorization: `Bearer ${key.secret}` } });
    expect(refused.status).toBe(401);
  });

  it("makes, lists and deletes signing keys: the HS256 secret shown once, an ES256 key from a public key file", async () => {
    const created = await plate(["signing-keys", "create", "shop", "--json"]);
    expect(created.code, created.stderr).toBe(0);
    const hs = JSON.parse(created.stdout) as { id: string; alg: string; secret: string };
    expect(hs.alg).toBe("HS256");
    expect(Buffer.from(hs.secret, "base64url")).toHaveLength(32);
    const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const dir = await mkdtemp(join(tmpdir(), "plate-cli-"));
    const file = join(dir, "public.pem");
    await writeFile(file, publicKey.export({ type: "spki", format: "pem" }));
    const es = await plate(["signing-keys", "create", "shop", "--alg", "ES256", "--public-key", file]);
    await rm(dir, { recursive: true, force: true });
    expect(es.code, es.stderr).toBe(0);
    const listed = await plate(["signing-keys", "list", "shop"]);
    expect(listed.stdout).toMatch(new RegExp(`^${hs.id}\\s+HS256`, "m"));
    expect(listed.stdout).toMatch(/\sES256\s/);
    expect(listed.stdout).not.toContain(hs.secret);
    const deleted = await plate(["signing-keys", "delete", "shop", hs.id]);
    expect(deleted.code).toBe(0);
    expect((await plate(["signing-keys", "delete", "shop", hs.id])).code).toBe(1);
    const refused = await plate(["signing-keys", "create", "shop", "--alg", "RS256"]);
    expect(refused.stderr).toContain("invalid_parameter");
  });

  it("mints a client path that a plain SSE client can use", async () => {
    const minted = await plate(["client-path", "shop", "orders", "--max-uses", "1", "--ttl", "60000"], { PLATE_KEY: secret });
    expect(minted.code, minted.stderr).toBe(0);
    const path = minted.stdout.split("\n")[0]!;
    expect(path).toMatch(new RegExp(`^${url}/shop/s/[A-Za-z0-9_-]{32}$`));
    expect(minted.stdout).toContain("max_uses 1");
    const abort = new AbortController();
    const res = await fetch(path, { signal: abort.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    abort.abort();
  });

  it("sets, reads and clears a plate's own limits", async () => {
    const set = await plate(["plates", "limits", "shop", "--set", "publishPerS=100, connections=50", "--json"]);
    expect(set.stderr).toBe("");
    expect(JSON.parse(set.stdout)).toMatchObject({ own: { publishPerS: 100, connections: 50 }, limits: { publishPerS: 100, connections: 50 } });
    const read = await plate(["plates", "limits", "shop"]);
    expect(read.stdout).toMatch(/^publishPerS\s+100\s+plate$/m);
    expect(read.stdout).toMatch(/^maxMessageBytes\s+\d+\s+node$/m);
    const refused = await plate(["plates", "limits", "shop", "--set", "nope=1"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("invalid_parameter");
    expect((await plate(["plates", "limits", "shop", "--set", "publishPerS=lots"])).code).toBe(2);
    const cleared = await plate(["plates", "limits", "shop", "--clear", "--json"]);
    expect(JSON.parse(cleared.stdout).own).toEqual({});
  });

  it("prints a plate's usage by day and by hour", async () => {
    const days = await plate(["plates", "usage", "shop", "--json"]);
    expect(days.stderr).toBe("");
    const rows = JSON.parse(days.stdout) as { start: string; published: number }[];
    expect(rows.at(-1)!.start).toBe(new Date().toISOString().slice(0, 10) + "T00:00:00.000Z");
    const hours = await plate(["plates", "usage", "shop", "--by", "hour"]);
    expect(hours.stdout).toMatch(/^START\s+PUBLISHED\s+BYTES\s+DELIVERED\s+TOKENS\s+PEAK CONNECTIONS$/m);
    expect((await plate(["plates", "usage", "shop", "--by", "week"])).code).toBe(1);
  });

  it("prints what a plate's history holds beside its budget", async () => {
    const before = JSON.parse((await plate(["plates", "storage", "shop", "--json"])).stdout);
    expect(before.limits).toEqual({ historyChannels: 10_000, historyBytes: 67_108_864 });
    const res = await fetch(`${url}/shop/pubsub/storage-test/publish`, {
      method: "POST",
      headers: { Authorization: `Bearer ${secret}`, "Content-Type": "application/json" },
      body: JSON.stringify({ message: "hi" }),
    });
    expect(res.status).toBe(200);
    const after = await plate(["plates", "storage", "shop"]);
    expect(after.stdout).toMatch(new RegExp(`^channels with history\\s+${before.channels + 1}\\s+10000$`, "m"));
    expect(after.stdout).toMatch(/^bytes\s+\d+\s+67108864$/m);
  });

  it("changes and clears a plate's history retention", async () => {
    const set = await plate(["plates", "history", "shop", "--history-count", "5", "--history-age-ms", "1000", "--json"]);
    expect(JSON.parse(set.stdout)).toMatchObject({ id: "shop", history: { count: 5, ageMs: 1000 } });
    const cleared = await plate(["plates", "history", "shop", "--clear"]);
    expect(cleared.stdout).toMatch(/^shop\s+The shop\s+\S+\s+default$/m);
  });

  it("shows the node's error code and exits 1 when the node refuses; exits 2 on a usage error", async () => {
    const missing = await plate(["plates", "get", "nope"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("error: not_found: No such plate.\n");
    const wrongToken = await plate(["plates", "list", "--admin-token", "not-the-token"]);
    expect(wrongToken.code).toBe(1);
    expect(wrongToken.stderr).toMatch(/^error: invalid_api_key: /);
    const json = await plate(["plates", "get", "nope", "--json"]);
    expect(JSON.parse(json.stderr)).toEqual({ error: { status: 404, code: "not_found", message: "No such plate." } });
    const usage = await plate(["plates", "frobnicate"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("unknown command: plates frobnicate");
    expect(usage.stderr).toContain("Usage: plate");
    const noKey = await plate(["client-path", "shop", "orders"]);
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain("--key or $PLATE_KEY");
  });

  it("deletes a plate and says so", async () => {
    const deleted = await plate(["plates", "delete", "shop"]);
    expect(deleted.code).toBe(0);
    expect(deleted.stdout).toBe("deleted plate shop and its keys\n");
    expect((await plate(["plates", "list"])).stdout).toBe("(none)\n");
  });

  it("tells why when the node cannot be reached", async () => {
    const down = await plate(["plates", "list"], { PLATE_URL: "http://127.0.0.1:1" });
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^error: cannot reach http:\/\/127\.0\.0\.1:1: /);
  });
});
