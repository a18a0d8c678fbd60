import { createHash, timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import { PlateError } from "@plate/protocol";
import type { Services } from "../services.js";
import type { AppEnv } from "./app.js";
import { readParams } from "./body.js";
import { plateParam } from "./params.js";
import { parseAuthorization } from "../core/tenancy.js";

/**
 * The admin routes of the spec, under `/admin`, guarded by `Authorization: Bearer <ADMIN_TOKEN>`.
 * Without an `ADMIN_TOKEN` they do not exist (404), so a node is never open by mistake.
 */
export function adminRoutes(services: Services): Hono<AppEnv> {
  const { config, tenancy } = services;
  const admin = new Hono<AppEnv>();
  const expected = config.adminToken === undefined ? undefined : digest(config.adminToken);

  admin.use("*", async (c, next) => {
    if (expected === undefined) throw new PlateError("not_found", "No such route; see the API reference.");
    const given = parseAuthorization(c.req.header("authorization"));
    if (given === undefined) throw new PlateError("missing_api_key", 'Send "Authorization: Bearer <ADMIN_TOKEN>".');
    if (!timingSafeEqual(digest(given), expected)) {
      throw new PlateError("invalid_api_key", "This is not the admin token of this deployment.");
    }
    await next();
  });

  admin.post("/plates", async (c) => {
    const body = await readParams(c.req.raw, config.maxMessageBytes);
    const { plate, key } = await tenancy.createPlate({ id: body.id, name: body.name, history: body.history });
    return c.json({ data: { plate, key: { id: key.id, secret: key.secret, scopes: key.scopes, channels: key.channels } } }, 201);
  });

  admin.get("/plates", async (c) => c.json({ data: await tenancy.listPlates() }));

  admin.get("/plates/:plateId", async (c) => {
    const plate = await tenancy.getPlate(plateParam(c.req.param("plateId")));
    if (plate === undefined) throw notFound("plate");
    return c.json({ data: plate });
  });

  // An extension of the contract: a plate's own history retention (`{"history": {...} | null}`).
  admin.patch("/plates/:plateId", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    const body = await readParams(c.req.raw, config.maxMessageBytes);
    if (!Object.hasOwn(body, "history")) throw new PlateError("invalid_parameter", 'Send {"history": {"count": n, "ageMs": ms}} or {"history": null}.');
    return c.json({ data: await tenancy.setPlateHistory(plateId, body.history) });
  });

  // A plate's own limits (its plan): `{"data":{"limits":{...in force},"own":{...set}}}`. PUT sets the
  // ones it names (the others go back to the node's settings); DELETE clears them all.
  admin.get("/plates/:plateId/limits", async (c) => c.json({ data: await tenancy.plateLimits(plateParam(c.req.param("plateId"))) }));

  admin.put("/plates/:plateId/limits", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    const body = await readParams(c.req.raw, config.maxMessageBytes);
    return c.json({ data: await tenancy.setPlateLimits(plateId, body) });
  });

  admin.delete("/plates/:plateId/limits", async (c) => c.json({ data: await tenancy.setPlateLimits(plateParam(c.req.param("plateId")), null) }));

  // What a plate used, by hour or day (UTC): `?by=day|hour&from=YYYY-MM-DD[THH]&to=...`; by default
  // the last `USAGE_KEEP_DAYS` days by day (at most 35 days in one read).
  admin.get("/plates/:plateId/usage", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    if ((await tenancy.getPlate(plateId)) === undefined) throw notFound("plate");
    const today = new Date().toISOString().slice(0, 10);
    const firstDay = new Date(Date.now() - (Math.min(config.usageKeepDays, 35) - 1) * 86_400_000).toISOString().slice(0, 10);
    const by = c.req.query("by") ?? "day";
    const data = await services.usage.read(plateId, by, c.req.query("from") ?? (by === "hour" ? today : firstDay), c.req.query("to") ?? today);
    return c.json({ data });
  });

  // What the plate's history holds now over every node, as its budget counts it, and the budget.
  admin.get("/plates/:plateId/storage", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    if ((await tenancy.getPlate(plateId)) === undefined) throw notFound("plate");
    const { retention, limits } = await tenancy.settingsOf(plateId);
    const used = await services.broker.historyUsage(plateId, retention);
    return c.json({ data: { channels: used.channels, bytes: used.bytes, limits: { historyChannels: limits.historyChannels, historyBytes: limits.historyBytes } } });
  });

  admin.delete("/plates/:plateId", async (c) => {
    if (!(await tenancy.deletePlate(plateParam(c.req.param("plateId"))))) throw notFound("plate");
    return c.body(null, 204);
  });

  admin.post("/plates/:plateId/keys", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    const body = await readParams(c.req.raw, config.maxMessageBytes);
    const key = await tenancy.createKey(plateId, body);
    return c.json(
      { data: { id: key.id, secret: key.secret, scopes: key.scopes, channels: key.channels, name: key.name } },
      201,
    );
  });

  admin.get("/plates/:plateId/keys", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    if ((await tenancy.getPlate(plateId)) === undefined) throw notFound("plate");
    return c.json({ data: await tenancy.listKeys(plateId) });
  });

  admin.delete("/plates/:plateId/keys/:keyId", async (c) => {
    if (!(await tenancy.revokeKey(plateParam(c.req.param("plateId")), c.req.param("keyId")))) throw notFound("key");
    return c.body(null, 204);
  });

  // Route 10's channel events: the plate's one webhook (its secret answered once, at each PUT).
  admin.put("/plates/:plateId/webhook", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    const body = await readParams(c.req.raw, config.maxMessageBytes);
    return c.json({ data: await services.webhooks.set(plateId, body) });
  });

  admin.get("/plates/:plateId/webhook", async (c) => {
    const hook = await services.webhooks.get(plateParam(c.req.param("plateId")));
    if (hook === undefined) throw notFound("webhook");
    return c.json({ data: hook });
  });

  admin.delete("/plates/:plateId/webhook", async (c) => {
    if (!(await services.webhooks.delete(plateParam(c.req.param("plateId"))))) throw notFound("webhook");
    return c.body(null, 204);
  });

  admin.post("/plates/:plateId/signing-keys", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    const body = await readParams(c.req.raw, config.maxMessageBytes);
    return c.json({ data: await services.signedTokens.create(plateId, body) }, 201);
  });

  admin.get("/plates/:plateId/signing-keys", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    if ((await tenancy.getPlate(plateId)) === undefined) throw notFound("plate");
    return c.json({ data: await services.signedTokens.list(plateId) });
  });

  admin.delete("/plates/:plateId/signing-keys/:keyId", async (c) => {
    if (!(await services.signedTokens.delete(plateParam(c.req.param("plateId")), c.req.param("keyId")))) throw notFound("signing key");
    return c.body(null, 204);
  });

  return admin;
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

function notFound(what: string): PlateError {
  return new PlateError("not_found", `No such ${what}.`);
}
