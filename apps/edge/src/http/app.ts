import type { ServerResponse } from "node:http";
import { Hono } from "hono";
import type { Context, Handler } from "hono";
import type { HttpBindings } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { PlateError, isChannelName, isClientTokenShape, readFilterParam, topicKey } from "@plate/protocol";
import type { ChannelName, PlateId, Topic } from "@plate/protocol";
import type { KeyRecord } from "@plate/store";
import { claimsGrant, keyGrant } from "../core/grants.js";
import { looksSigned } from "../core/signed-tokens.js";
import { openWithClientToken, realtimeCredential } from "../core/openings.js";
import type { Opening } from "../core/openings.js";
import { hashToken, readChange } from "../core/realtime.js";
import type { Asker, Change } from "../core/realtime.js";
import { loggablePath, requestIdOf } from "../core/request-id.js";
import { topicOf } from "../core/subscriptions.js";
import { parseAuthorization } from "../core/tenancy.js";
import { booleanParam, listParam } from "../core/tokens.js";
import type { Services } from "../services.js";
import { SseConnection } from "../transports/sse.js";
import { adminRoutes } from "./admin.js";
import { consoleRoutes } from "./console.js";
import { readJson, readParams } from "./body.js";
import { corsHeaders, preflightHeaders } from "./cors.js";
import { NO_SNIFF } from "./raw-response.js";
import { filterParam, patternQuery, plateParam, realtimeQuery, topicParam } from "./params.js";
import { errorAnswer, refuse } from "./refusals.js";
import { ROUTES } from "./routes.js";
import type { RouteName } from "./routes.js";

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
    const answer = errorAnswer(refuse(services, err, { what: "request refused", requestId: c.get("requestId"), path: loggablePath(c.req.path) }));
    return c.body(answer.body, answer.status as 400, answer.headers);
  });

  app.notFound(() => {
    throw new PlateError("not_found", "No such route; see the API reference.");
  });

  app.route("/admin", adminRoutes(services));
  if (config.consoleEnabled) app.route("/console", consoleRoutes());

  // 2 and 7: subscribe with SSE.
  const subscribe = async (c: Context<AppEnv>) => {
    refuseWhileDraining(services);
    const topic = topicParam(plateParam(c.req.param("plateId") ?? ""), c.req.param("channel") ?? "", patternQuery(c.req.query("pattern")));
    const key = await services.tenancy.authenticate(topic.plateId, c.req.header("authorization"));
    services.tenancy.authorize(key, "subscribe", topic);
    const filter = readFilterParam(c.req.query("filter"));
    return openSse(c, services, { plateId: topic.plateId, keyId: key.id, wire: "v1", asked: [{ topic, since: lastEventId(c), filter }] });
  };

  // 3 and 8 answer here only when the request is not a WebSocket upgrade.
  const notUpgrade = () => {
    throw new PlateError("bad_request", "This route takes a WebSocket upgrade.");
  };

  /** The handler of every route of the table but 1 and 6 (publish is served before Hono: publish.ts). */
  const handlers: Record<Exclude<RouteName, "publish" | "publishLegacy" | "publishBatch">, Handler<AppEnv>> = {
    healthz: (c) => c.json({ data: { status: "ok" } }),
    readyz: (c) => {
      if (services.draining()) throw new PlateError("shutting_down", "This node is draining.");
      const notReady = services.notReady();
      if (notReady !== undefined) throw new PlateError("broker_unavailable", notReady);
      return c.json({ data: { status: "ready" } });
    },
    metrics: async (c) => c.body(await metrics.registry.metrics(), 200, { "Content-Type": metrics.registry.contentType }),
    subscribeSse: subscribe,
    subscribeSseLegacy: subscribe,
    subscribeWs: notUpgrade,
    subscribeWsLegacy: notUpgrade,

    // 4: mint a client token: the path's channel or pattern, and any `channels` and `patterns`.
    clientToken: async (c) => {
      const plateId = plateParam(c.req.param("plateId") ?? "");
      const key = await services.tenancy.authenticate(plateId, c.req.header("authorization"));
      const params =
        c.req.method === "POST"
          ? await readParams(c.req.raw, config.maxMessageBytes)
          : { ...c.req.query(), channels: c.req.queries("channels"), patterns: c.req.queries("patterns") };
      const topic = topicParam(plateId, c.req.param("channel") ?? "", booleanParam(params, "pattern"));
      const topics: [Topic, ...Topic[]] = [topic];
      const keys = new Set([topicKey(topic)]);
      for (const [name, pattern] of [["channels", false], ["patterns", true]] as const) {
        for (const item of listParam(params, name)) {
          const more = topicParam(plateId, item, pattern);
          if (!keys.has(topicKey(more))) topics.push(more);
          keys.add(topicKey(more));
        }
      }
      if (topics.length > config.maxSubscriptionsPerConnection) {
        throw new PlateError("invalid_parameter", `A client path may name at most ${config.maxSubscriptionsPerConnection} channels and patterns.`);
      }
      for (const t of topics) services.tenancy.authorize(key, "client", t);
      // A filter the path enforces (route 13): checked now, so a bad one is refused at minting.
      const filter = filterParam(params.filter);
      if (filter !== undefined) services.filters.compile([filter], topicKey(topic));
      const limits = await services.tenancy.limitsOf(plateId);
      const rate = { perS: limits.tokensPerS, burst: limits.tokensBurst };
      return c.json({ data: await services.tokens.mint(key.id, topics, params, filter === undefined ? undefined : JSON.stringify(filter), rate, limits.tokenBytes) });
    },

    // 5: connect with a client token (the WebSocket upgrade is in upgrade.ts).
    connectToken: async (c) => {
      refuseWhileDraining(services);
      const since = lastEventId(c);
      return openWithClientToken(
        services,
        plateParam(c.req.param("plateId") ?? ""),
        c.req.param("token") ?? "",
        () => since,
        (opening) => openSse(c, services, opening),
        readFilterParam(c.req.query("filter")),
      );
    },

    // 9: the realtime connection over SSE (the WebSocket upgrade is in upgrade.ts).
    realtime: async (c) => {
      refuseWhileDraining(services);
      const plateId = plateParam(c.req.param("plateId") ?? "");
      const credential = (await realtimeCredential(services, plateId, c.req.header("authorization"), c.req.query("token")))!;
      const asked = realtimeQuery(plateId, new URL(c.req.url).searchParams, config.maxSubscriptionsPerConnection, lastEventId(c));
      for (const { topic } of asked) credential.grant.subscribe(topic);
      return openSse(c, services, {
        plateId,
        keyId: credential.keyId,
        wire: "v2",
        asked,
        grant: credential.grant,
        ...(credential.claims === undefined ? {} : { claims: credential.claims }),
      });
    },

    // 9: change a live stream's subscriptions, whichever node holds it.
    realtimeChange: async (c) => {
      const plateId = plateParam(c.req.param("plateId") ?? "");
      const clientId = c.req.param("clientId") ?? "";
      const change = readChange(await readJson(c.req.raw, config.maxMessageBytes), config.maxSubscriptionsPerConnection);
      if (change === undefined) {
        throw new PlateError("bad_request", 'The body is {"subscribe":[{"channel":"a"}],"unsubscribe":[{"pattern":"b:*"}]}.');
      }
      const asker = await changeAsker(services, plateId, c.req.header("authorization"), change);
      const subscriptions = await services.realtime.change(plateId, clientId, asker, change);
      return c.json({ data: { subscriptions } });
    },

    // 10: the members of a channel, from any node.
    presence: async (c) => {
      const plateId = plateParam(c.req.param("plateId") ?? "");
      const key = await services.tenancy.authenticate(plateId, c.req.header("authorization"));
      const topic = topicParam(plateId, c.req.param("channel") ?? "", false);
      services.tenancy.authorize(key, "subscribe", topic);
      const members = await services.presence.members(plateId, topic.channel as ChannelName);
      return c.body(`{"data":{"members":[${members.join(",")}],"count":${members.length}}}`, 200, { "Content-Type": "application/json" });
    },

    // 10: the plate's channels with subscribers (occupancy), over every node.
    occupancy: async (c) => {
      const plateId = plateParam(c.req.param("plateId") ?? "");
      const key = await services.tenancy.authenticate(plateId, c.req.header("authorization"));
      const prefix = c.req.query("prefix") ?? "";
      if (prefix !== "" && !isChannelName(prefix)) throw new PlateError("invalid_parameter", '"prefix" is the start of a channel name: 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ and -.');
      if (!key.scopes.includes("subscribe")) throw new PlateError("forbidden", 'This API key lacks the "subscribe" scope.');
      // A key limited to some channels sees only those.
      const allowed = (channel: string) => {
        try {
          services.tenancy.authorize(key, "subscribe", { plateId, pattern: false, channel: channel as ChannelName });
          return true;
        } catch {
          return false;
        }
      };
      const { channels, truncated } = await services.occupancy.of(plateId, prefix);
      return c.json({ data: channels.filter((entry) => allowed(entry.channel)), ...(truncated ? { truncated: true } : {}) });
    },
  };
  for (const route of ROUTES) {
    if (route.name === "publish" || route.name === "publishLegacy" || route.name === "publishBatch") continue;
    app.on([...route.methods], route.path, handlers[route.name]);
  }

  return app;
}

/**
 * Who asks for a change: a key of the plate allowed to subscribe to every topic asked for (checked
 * here); a signed client token (route 11) that allows them (checked here), whose user the stream's
 * node compares with the user of the token the stream holds; or else a credential with a client
 * token's shape, which the stream's node compares with the token the stream was opened with.
 */
async function changeAsker(services: Services, plateId: PlateId, header: string | undefined, change: Change): Promise<Asker> {
  const bearer = parseAuthorization(header);
  if (bearer !== undefined && looksSigned(bearer)) {
    const claims = await services.signedTokens.verify(plateId, bearer);
    const grant = claimsGrant(claims);
    for (const asked of change.subscribe) grant.subscribe(topicOf({ plateId }, asked));
    return { kind: "user", sub: claims.sub };
  }
  let key: KeyRecord;
  try {
    key = await services.tenancy.authenticate(plateId, header);
  } catch (err) {
    const token = parseAuthorization(header);
    if (err instanceof PlateError && err.code === "invalid_api_key" && token !== undefined && isClientTokenShape(token)) {
      return { kind: "token", tokenHash: hashToken(token) };
    }
    throw err;
  }
  const grant = keyGrant(services.tenancy, key);
  for (const asked of change.subscribe) grant.subscribe(topicOf({ plateId }, asked));
  return { kind: "vouched" };
}

/** `Last-Event-ID` (a browser's EventSource reconnect), or `?lastEventId=` for clients that cannot set headers. */
function lastEventId(c: Context<AppEnv>): string | undefined {
  return c.req.header("last-event-id") || c.req.query("lastEventId") || undefined;
}

async function openSse(c: Context<AppEnv>, services: Services, opening: Opening) {
  const { config } = services;
  const res: ServerResponse = c.env.outgoing;
  const conn = new SseConnection(
    res,
    {
      plateId: opening.plateId,
      keyId: opening.keyId,
      clientId: services.realtime.newClientId(),
      wire: opening.wire,
      maxOverlapChannels: config.maxOverlapChannels,
    },
    { ...corsHeaders(config.corsOrigins, c.req.header("origin")), "X-Request-Id": c.get("requestId") },
    config.sseRetryMs,
    { maxBufferedBytes: config.slowConsumerMaxBytes, graceMs: config.slowConsumerGraceMs, noDelay: services.subscriberNoDelay, directSend: services.directSend },
  );
  if (opening.wire === "v2" && opening.grant !== undefined) services.realtime.register(conn, opening.grant, opening.token, opening.claims);
  await services.subscriptions.open(conn, opening.asked, {
    maxDurationMs: opening.maxDurationMs ?? 0,
    requestId: c.get("requestId"),
    slot: opening.slot,
    filter: opening.filter,
    refuse: (err) => refuse(services, err, { what: "request refused", requestId: c.get("requestId"), path: loggablePath(c.req.path) }),
  });
  return RESPONSE_ALREADY_SENT;
}

function refuseWhileDraining(services: Services): void {
  if (services.draining()) {
    throw new PlateError("shutting_down", "This node is shutting down; connect to another.", { retryAfterS: 1 });
  }
}
