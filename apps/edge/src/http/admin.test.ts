import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, KEYS, publish, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";
import { adminCall } from "../test-support/admin.js";

describe("admin routes without ADMIN_TOKEN", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({ ADMIN_TOKEN: "" });
  });
  afterAll(() => t.cleanup());

  it.each([
    ["POST", "/admin/plates"],
    ["GET", "/admin/plates"],
    ["GET", "/admin/plates/acme"],
    ["DELETE", "/admin/plates/acme"],
    ["POST", "/admin/plates/acme/keys"],
    ["GET", "/admin/plates/acme/keys"],
    ["DELETE", "/admin/plates/acme/keys/key_whatever"],
  ])("%s %s answers 404 not_found, even with a bearer token", async (method, path) => {
    for (const token of [null, ADMIN_TOKEN]) {
      const res = await adminCall(t.url, method, path, {
        token,
        body: method === "POST" ? { id: "newplate" } : undefined,
      });
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe("not_found");
    }
  });

  it("leaves the bootstrapped plate untouched after the refused calls", async () => {
    expect((await publish(t.url, "acme", "alerts", "still here")).status).toBe(200);
  });
});

describe("admin routes with ADMIN_TOKEN", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("refuses a request without Authorization with 401 missing_api_key", async () => {
    const res = await adminCall(t.url, "GET", "/admin/plates", { token: null });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe("missing_api_key");
  });

  it("refuses a wrong admin token with 401 invalid_api_key", async () => {
    for (const token of ["wrong-token", ADMIN_TOKEN + "x"]) {
      const res = await adminCall(t.url, "GET", "/admin/plates", { token });
      expect(res.status).toBe(401);
      expect(res.body.error.code).toBe("invalid_api_key");
    }
  });

  it("refuses a plate's API key as the admin token with 401 invalid_api_key", async () => {
    const res = await adminCall(t.url, "POST", "/admin/plates", { token: KEYS.acme, body: { id: "sneaky" } });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe("invalid_api_key");
  });

  it("creates a plate with a first key of every scope, whose secret publishes on that plate", async () => {
    const res = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "shop", name: "Shop" } });
    expect(res.status).toBe(201);
    const { plate, key } = res.body.data;
    expect(plate).toEqual({ id: "shop", name: "Shop", createdAt: expect.any(String) });
    expect(new Date(plate.createdAt).toISOString()).toBe(plate.createdAt);
    expect(key).toEqual({
      id: expect.any(String),
      secret: expect.any(String),
      scopes: ["publish", "subscribe", "client"],
      channels: null,
    });
    const published = await publish(t.url, "shop", "orders", { n: 1 }, key.secret);
    expect(published.status).toBe(200);
    expect(published.body.data.channel).toBe("orders");
    // The key belongs to "shop" only.
    const elsewhere = await publish(t.url, "acme", "orders", { n: 1 }, key.secret);
    expect(elsewhere.status).toBe(401);
    expect(elsewhere.body.error.code).toBe("invalid_api_key");
  });

  it("creates a plate with a generated valid id when the request has no body", async () => {
    const res = await adminCall(t.url, "POST", "/admin/plates");
    expect(res.status).toBe(201);
    const { plate, key } = res.body.data;
    expect(plate.id).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(typeof plate.name).toBe("string");
    expect((await publish(t.url, plate.id, "alerts", "hi", key.secret)).status).toBe(200);
    const again = await adminCall(t.url, "POST", "/admin/plates");
    expect(again.status).toBe(201);
    expect(again.body.data.plate.id).not.toBe(plate.id);
  });

  it("refuses a duplicate plate id with 409 conflict", async () => {
    expect((await adminCall(t.url, "POST", "/admin/plates", { body: { id: "dup" } })).status).toBe(201);
    const res = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "dup" } });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe("conflict");
    // A bootstrapped plate is a duplicate too.
    const acme = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "acme" } });
    expect(acme.status).toBe(409);
    expect(acme.body.error.code).toBe("conflict");
  });

  it.each([["has space"], ["a/b"], [""], ["x".repeat(65)], [42]])(
    "refuses the plate id %j with 400 invalid_plate",
    async (id) => {
      const res = await adminCall(t.url, "POST", "/admin/plates", { body: { id } });
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe("invalid_plate");
    },
  );

  it("lists plates without any secret", async () => {
    const created = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "listed", name: "Listed" } });
    const secret: string = created.body.data.key.secret;
    const res = await adminCall(t.url, "GET", "/admin/plates");
    expect(res.status).toBe(200);
    expect(Array.isArray(res.body.data)).toBe(true);
    const ids = res.body.data.map((p: any) => p.id);
    expect(ids).toEqual(expect.arrayContaining(["acme", "globex", "listed"]));
    expect(res.body.data.find((p: any) => p.id === "listed")).toEqual({
      id: "listed",
      name: "Listed",
      createdAt: created.body.data.plate.createdAt,
    });
    expect(res.text).not.toContain(secret);
    expect(res.text).not.toContain(KEYS.acme);
  });

  it("answers one plate by id, and 404 not_found for an unknown one", async () => {
    await adminCall(t.url, "POST", "/admin/plates", { body: { id: "single", name: "Single" } });
    const res = await adminCall(t.url, "GET", "/admin/plates/single");
    expect(res.status).toBe(200);
    expect(res.body.data).toEqual({ id: "single", name: "Single", createdAt: expect.any(String) });
    const unknown = await adminCall(t.url, "GET", "/admin/plates/nosuchplate");
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("not_found");
  });

  it("creates a key limited to scopes and channels, with a name, whose secret works within those limits", async () => {
    await adminCall(t.url, "POST", "/admin/plates", { body: { id: "keyed" } });
    const res = await adminCall(t.url, "POST", "/admin/plates/keyed/keys", {
      body: { scopes: ["publish"], channels: ["orders:*"], name: "orders-writer" },
    });
    expect(res.status).toBe(201);
    expect(res.body.data).toEqual({
      id: expect.any(String),
      secret: expect.any(String),
      scopes: ["publish"],
      channels: ["orders:*"],
      name: "orders-writer",
    });
    const { secret } = res.body.data;
    expect((await publish(t.url, "keyed", "orders:1", "ok", secret)).status).toBe(200);
    const otherChannel = await publish(t.url, "keyed", "users:1", "no", secret);
    expect(otherChannel.status).toBe(403);
    expect(otherChannel.body.error.code).toBe("forbidden");
    const subscribe = await fetch(`${t.url}/keyed/pubsub/orders:1/subscribe`, {
      headers: { Authorization: `Bearer ${secret}` },
    });
    expect(subscribe.status).toBe(403);
    expect(((await subscribe.json()) as any).error.code).toBe("forbidden");
  });

  it("creates a key of every scope and every channel when the body is empty", async () => {
    await adminCall(t.url, "POST", "/admin/plates", { body: { id: "defaults" } });
    const res = await adminCall(t.url, "POST", "/admin/plates/defaults/keys");
    expect(res.status).toBe(201);
    expect(res.body.data).toMatchObject({ scopes: ["publish", "subscribe", "client"], channels: null });
    expect((await publish(t.url, "defaults", "anything", 1, res.body.data.secret)).status).toBe(200);
  });

  it.each([
    ["scopes", ["admin"]],
    ["scopes", []],
    ["scopes", "publish"],
    ["channels", ["a b"]],
    ["channels", []],
  ])("refuses a key with %s %j with 400 invalid_parameter", async (field, value) => {
    await adminCall(t.url, "POST", "/admin/plates", { body: { id: "strict" } });
    const res = await adminCall(t.url, "POST", "/admin/plates/strict/keys", { body: { [field]: value } });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("invalid_parameter");
  });

  it("refuses a key for an unknown plate with 404 not_found", async () => {
    const res = await adminCall(t.url, "POST", "/admin/plates/nosuchplate/keys", { body: { scopes: ["publish"] } });
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe("not_found");
  });

  it("lists a plate's keys without secret or hash", async () => {
    const created = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "keylist" } });
    const first = created.body.data.key;
    const second = await adminCall(t.url, "POST", "/admin/plates/keylist/keys", {
      body: { scopes: ["subscribe"], name: "reader" },
    });
    const res = await adminCall(t.url, "GET", "/admin/plates/keylist/keys");
    expect(res.status).toBe(200);
    expect(res.body.data.map((k: any) => k.id).sort()).toEqual([first.id, second.body.data.id].sort());
    for (const key of res.body.data) {
      expect(key).not.toHaveProperty("secret");
      expect(key).not.toHaveProperty("hash");
      expect(key).toMatchObject({ id: expect.any(String), scopes: expect.any(Array) });
    }
    expect(res.body.data.find((k: any) => k.id === second.body.data.id)).toMatchObject({
      name: "reader",
      scopes: ["subscribe"],
      channels: null,
    });
    expect(res.text).not.toContain(first.secret);
    expect(res.text).not.toContain(second.body.data.secret);
    const unknown = await adminCall(t.url, "GET", "/admin/plates/nosuchplate/keys");
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe("not_found");
  });

  it("revokes a key with 204: it stops working, and revoking it again answers 404 not_found", async () => {
    await adminCall(t.url, "POST", "/admin/plates", { body: { id: "revoking" } });
    const key = (await adminCall(t.url, "POST", "/admin/plates/revoking/keys")).body.data;
    expect((await publish(t.url, "revoking", "alerts", 1, key.secret)).status).toBe(200);
    const res = await adminCall(t.url, "DELETE", `/admin/plates/revoking/keys/${key.id}`);
    expect(res.status).toBe(204);
    expect(res.text).toBe("");
    const refused = await publish(t.url, "revoking", "alerts", 1, key.secret);
    expect(refused.status).toBe(401);
    expect(refused.body.error.code).toBe("invalid_api_key");
    const again = await adminCall(t.url, "DELETE", `/admin/plates/revoking/keys/${key.id}`);
    expect(again.status).toBe(404);
    expect(again.body.error.code).toBe("not_found");
    const keys = (await adminCall(t.url, "GET", "/admin/plates/revoking/keys")).body.data;
    expect(keys.map((k: any) => k.id)).not.toContain(key.id);
  });

  it("does not revoke a key through another plate's path (404 not_found)", async () => {
    await adminCall(t.url, "POST", "/admin/plates", { body: { id: "owner" } });
    const key = (await adminCall(t.url, "POST", "/admin/plates/owner/keys")).body.data;
    const res = await adminCall(t.url, "DELETE", `/admin/plates/acme/keys/${key.id}`);
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe("not_found");
    expect((await publish(t.url, "owner", "alerts", 1, key.secret)).status).toBe(200);
  });

  it("deletes a plate with 204: its keys answer 401 invalid_api_key and the plate is gone", async () => {
    const created = (await adminCall(t.url, "POST", "/admin/plates", { body: { id: "doomed" } })).body.data;
    const extra = (await adminCall(t.url, "POST", "/admin/plates/doomed/keys")).body.data;
    const res = await adminCall(t.url, "DELETE", "/admin/plates/doomed");
    expect(res.status).toBe(204);
    expect(res.text).toBe("");
    for (const secret of [created.key.secret, extra.secret]) {
      const refused = await publish(t.url, "doomed", "alerts", 1, secret);
      expect(refused.status).toBe(401);
      expect(refused.body.error.code).toBe("invalid_api_key");
    }
    const gone = await adminCall(t.url, "GET", "/admin/plates/doomed");
    expect(gone.status).toBe(404);
    expect(gone.body.error.code).toBe("not_found");
    const list = (await adminCall(t.url, "GET", "/admin/plates")).body.data;
    expect(list.map((p: any) => p.id)).not.toContain("doomed");
    const again = await adminCall(t.url, "DELETE", "/admin/plates/doomed");
    expect(again.status).toBe(404);
    expect(again.body.error.code).toBe("not_found");
    // Deleting one plate leaves the others working.
    expect((await publish(t.url, "acme", "alerts", 1)).status).toBe(200);
  });

  it("lets a deleted plate's id be created again, with a new key", async () => {
    const old = (await adminCall(t.url, "POST", "/admin/plates", { body: { id: "phoenix" } })).body.data.key;
    expect((await adminCall(t.url, "DELETE", "/admin/plates/phoenix")).status).toBe(204);
    const created = await adminCall(t.url, "POST", "/admin/plates", { body: { id: "phoenix" } });
    expect(created.status).toBe(201);
    expect((await publish(t.url, "phoenix", "alerts", 1, created.body.data.key.secret)).status).toBe(200);
    expect((await publish(t.url, "phoenix", "alerts", 1, old.secret)).status).toBe(401);
  });
});

describe("admin signing keys (route 11)", () => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode();
  });
  afterAll(() => t.cleanup());

  it("makes an HS256 key, shows its secret once, lists it without, and deletes it: 204 once, then 404", async () => {
    const made = await adminCall(t.url, "POST", "/admin/plates/acme/signing-keys", { body: {} });
    expect(made.status, made.text).toBe(201);
    expect(made.body.data).toMatchObject({ alg: "HS256" });
    expect(Buffer.from(made.body.data.secret as string, "base64url")).toHaveLength(32);
    const listed = await adminCall(t.url, "GET", "/admin/plates/acme/signing-keys");
    expect(listed.body.data).toEqual([{ id: made.body.data.id, alg: "HS256", createdAt: made.body.data.createdAt }]);
    expect((await adminCall(t.url, "DELETE", `/admin/plates/acme/signing-keys/${made.body.data.id}`)).status).toBe(204);
    expect((await adminCall(t.url, "DELETE", `/admin/plates/acme/signing-keys/${made.body.data.id}`)).status).toBe(404);
  });

  it("refuses an unknown algorithm or a missing public key with 400, and a plate that does not exist with 404", async () => {
    expect((await adminCall(t.url, "POST", "/admin/plates/acme/signing-keys", { body: { alg: "none" } })).body.error.code).toBe("invalid_parameter");
    expect((await adminCall(t.url, "POST", "/admin/plates/acme/signing-keys", { body: { alg: "RS256" } })).body.error.code).toBe("invalid_parameter");
    expect((await adminCall(t.url, "POST", "/admin/plates/nobody/signing-keys", { body: {} })).status).toBe(404);
    expect((await adminCall(t.url, "GET", "/admin/plates/nobody/signing-keys")).status).toBe(404);
  });
});
