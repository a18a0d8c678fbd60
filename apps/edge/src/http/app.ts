import type { ServerResponse } from "node:http";
import { Hono } from "hono";
import type { Context } from "hono";
import type { HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { PlateError, isClientTokenShape, toPlateError } from "@plate/protocol";
import type { Topic } from "@plate/protocol";
import type { KeyRecord } from "@plate/store";
import type { ConnectionSlot } from "../core/connections.js";
import { newClientId } from "../core/ids.js";
import { loggablePath, requestIdOf } from "../core/request-id.js";
import { booleanParam } from "../core/tokens.js";
import type { Services } from "../services.js";
import { SseConnection } from "../transports/sse.js";
import { adminRoutes } from "./admin.js";
import { consoleRoutes } from "./console.js";
import { readParams } from "./body.js";
import { corsHeaders, preflightHeaders } from "./cors.js";
import { NO_SNIFF } from "./raw-response.js";
import { patternQuery, plateParam, topicParam } from "./params.js";

/** Hono's environment on Node: the raw request and response are at `c.env`; the request's id. */
export type AppEnv = { Bindings: HttpBindings; Variables: { requestId: string } };

/**
 * The HTTP side of an edge node: every route of the spec but the WebSocket upgrades (see
 * `upgrade.ts`). Errors from anywhere become the spec's error body through one boundary.
 */
export function createApp(services: Services): Hono<AppEnv> {
  const { config, metrics, log } = services;
  const app = new Hono<AppEnv>();

  app.use("*", async (c, next) => {
    const started = performance.now();
    const requestId = requestIdOf(c.req.header("x-request-id"));
    c.set("requestId", requestId);
    c.header("X-Request-Id", requestId);
    c.header("X-Content-Type-Options", NO_SNIFF["X-Content-Type-Options"]);
    const cors = corsHeaders(config.corsOrigins, c.req.header("origin"));
    if (c.req.method === "OPTIONS") {
      return c.body(null, 204, { ...cors, ...preflightHeaders() });
    }
    for (const [name, value] of Object.entries(cors)) c.header(name, value);
    await next();
    if (log.debugEnabled) {
      log.debug("request", {
        requestId,
        method: c.req.method,
        path: loggablePath(c.req.path),
        status: c.res.status,
        ms: Math.round(performance.now() - started),
      });
    }
    return undefined;
  });

  app.onError((err, c) => {
    const error = toPlateError(err);
    if (error.code === "internal_error") {
      log.error("request failed", { requestId: c.get("requestId"), path: loggablePath(c.req.path), error: String(err) });
    }
    metrics.rejected.inc({ code: error.code });
    if (error.retryAfterS !== undefined) c.header("Retry-After", String(error.retryAfterS));
    return c.json(error.toBody(), error.status as 400);
  });

  app.notFound(() => {
    throw new PlateError("not_found", "No such route; see the API reference.");
  });

  app.get("/healthz", (c) => c.json({ data: { status: "ok" } }));
  app.get("/readyz", (c) => {
    if (services.draining()) throw new PlateError("shutting_down", "This node is draining.");
    const notReady = services.notReady();
    if (notReady !== undefined) throw new PlateError("broker_unavailable", notReady);
    return c.json({ data: { status: "ready" } });
  });
  app.get("/metrics", async (c) =>
    c.body(await metrics.registry.metrics(), 200, { "Content-Type": metrics.registry.contentType }),
  );

  app.route("/admin", adminRoutes(services));
  if (config.consoleEnabled) app.route("/console", consoleRoutes());

  // 1 and 6 (publish) are served before Hono: see publish.ts.

  // 2 and 7: subscribe with SSE.
  const subscribe = async (c: Context<AppEnv>, plate: string, channel: string) => {
    refuseWhileDraining(services);
    const topic = topicParam(plateParam(plate), channel, patternQuery(c.req.query("pattern")));
    const key = await services.tenancy.authenticate(topic.plateId, c.req.header("authorization"));
    services.tenancy.authorize(key, "subscribe", topic);
    return openSse(c, services, topic, key.id, 0);
  };
  app.get("/:plateId/pubsub/:channel/subscribe", (c) => subscribe(c, c.req.param("plateId"), c.req.param("channel")));
  app.get("/:plateId/subscribe/:channel", (c) => subscribe(c, c.req.param("plateId"), c.req.param("channel")));

  // 3 and 8 answer here only when the request is not a WebSocket upgrade.
  const notUpgrade = () => {
    throw new PlateError("bad_request", "This route takes a WebSocket upgrade.");
  };
  app.get("/:plateId/pubsub/:channel/ws", notUpgrade);
  app.get("/:plateId/ws/subscribe/:channel", notUpgrade);

  // 4: mint a client token.
  app.on(["GET", "POST"], "/:plateId/pubsub/:channel/client", async (c) => {
    const plateId = plateParam(c.req.param("plateId"));
    const key = await services.tenancy.authenticate(plateId, c.req.header("authorization"));
    const params = c.req.method === "POST" ? await readParams(c.req.raw, config.maxMessageBytes) : c.req.query();
    const topic = topicParam(plateId, c.req.param("channel"), booleanParam(params, "pattern"));
    services.tenancy.authorize(key, "client", topic);
    return c.json({ data: await services.tokens.mint(key.id, topic, params) });
  });

  // 5: connect with a client token (the WebSocket upgrade is in upgrade.ts).
  app.get("/:plateId/s/:token", async (c) => {
    refuseWhileDraining(services);
    const plateId = plateParam(c.req.param("plateId"));
    const token = c.req.param("token");
    if (!isClientTokenShape(token)) {
      throw new PlateError("invalid_client_socket", "This client socket path does not exist; mint a new one.");
    }
    return services.connections.holding(plateId, async (slot) => {
      const record = await services.tokens.claim(plateId, token);
      const topic = { plateId, pattern: record.pattern, channel: record.channel } as Topic;
      return openSse(c, services, topic, record.keyId, record.maxDurationMs, slot);
    });
  });

  return app;
}

async function openSse(
  c: Context<AppEnv>,
  services: Services,
  topic: Topic,
  keyId: KeyRecord["id"],
  maxDurationMs: number,
  slot?: ConnectionSlot,
) {
  const { config } = services;
  const res: ServerResponse = c.env.outgoing;
  const conn = new SseConnection(
    res,
    topic.plateId,
    keyId,
    topic,
    newClientId(),
    { ...corsHeaders(config.corsOrigins, c.req.header("origin")), "X-Request-Id": c.get("requestId") },
    config.sseRetryMs,
    { maxBufferedBytes: config.slowConsumerMaxBytes, graceMs: config.slowConsumerGraceMs },
  );
  // Browsers send Last-Event-ID on EventSource's own reconnect; `?lastEventId=` is for clients
  // that cannot set headers (a first connection made by hand).
  const since = c.req.header("last-event-id") || c.req.query("lastEventId") || undefined;
  await services.subscriptions.open(conn, maxDurationMs, since, c.get("requestId"), slot);
  return RESPONSE_ALREADY_SENT;
}

function refuseWhileDraining(services: Services): void {
  if (services.draining()) {
    throw new PlateError("shutting_down", "This node is shutting down; connect to another.", { retryAfterS: 1 });
  }
}
