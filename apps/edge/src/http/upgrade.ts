import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import type { RawData, WebSocket } from "ws";
import { PlateError, parseClientFrame, readFilterParam } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import type { KeyRecord } from "@plate/store";
import { openWithClientToken, realtimeCredential } from "../core/openings.js";
import type { Opening } from "../core/openings.js";
import { PendingConnections } from "../core/pending-connections.js";
import { loggablePath, requestIdOf } from "../core/request-id.js";
import type { Services } from "../services.js";
import { WsConnection, acceptSocket, closeWithError, frameText } from "../transports/ws.js";
import { corsHeaders } from "./cors.js";
import { patternQuery, plateParam, realtimeQuery, topicParam } from "./params.js";
import { NO_SNIFF, rawHead } from "./raw-response.js";
import { errorAnswer, refuse } from "./refusals.js";
import { matchRoute } from "./routes.js";
import type { Route } from "./routes.js";
import { requestUrl } from "./target.js";

/** A WebSocket route: subscribe with a key (3, 8), connect with a client token (5), or the realtime connection (9). */
type WsRoute =
  | { readonly kind: "subscribe"; readonly plate: string; readonly channel: string }
  | { readonly kind: "token"; readonly plate: string; readonly token: string }
  | { readonly kind: "realtime"; readonly plate: string };

/**
 * Handles WebSocket upgrades. Every refusal after routing completes the handshake, sends the error
 * frame and closes with the code's close code (reason = the code): a browser cannot read the
 * status of a refused upgrade, so this is the only way it learns why (the spec asks it of route 5;
 * routes 3 and 8 do the same, so one client handles both).
 *
 * Except past the caps on WebSockets not authenticated yet (`MAX_PENDING_CONNECTIONS`, and
 * `..._PER_ADDRESS` for `request.socket.remoteAddress`): counted from the upgrade until the key or
 * client token is accepted (or the socket is refused or closed), and refused before the handshake
 * with HTTP 429 `rate_limited`, as completing it would spend what the caps protect.
 */
export function createUpgradeHandler(services: Services) {
  const { config } = services;
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.wsMaxClientFrameBytes,
    perMessageDeflate: false,
    clientTracking: false,
    // Protocol pings are answered by `acceptSocket`, within the output limit.
    autoPong: false,
  });
  const limits = {
    maxBufferedBytes: config.slowConsumerMaxBytes,
    graceMs: config.slowConsumerGraceMs,
    noDelay: services.subscriberNoDelay,
    directSend: services.directSend,
    maxBadFrames: config.wsMaxBadFrames,
    maxFrameBytes: config.wsMaxClientFrameBytes,
  };
  const pending = new PendingConnections(config.maxPendingConnections, config.maxPendingConnectionsPerAddress);
  // Once per node, not per socket: a pending socket's `close` listener.
  function onPendingClose(this: Duplex): void {
    pending.delete(this);
  }
  /** The socket is no longer pending: authenticated, refused or closed. */
  function settle(socket: Duplex): void {
    pending.delete(socket);
    socket.off("close", onPendingClose);
  }
  // The request id of each upgrade, for the 101's X-Request-Id header and the logs.
  const requestIds = new WeakMap<IncomingMessage, string>();
  wss.on("headers", (headers: string[], request: IncomingMessage) => {
    const requestId = requestIds.get(request);
    if (requestId !== undefined) headers.push(`X-Request-Id: ${requestId}`);
  });

  /** Refuses the one way (`refuse`: logged, counted); the caller answers it. */
  function report(request: IncomingMessage, err: unknown): PlateError {
    return refuse(services, err, { what: "websocket refused", requestId: requestIds.get(request), path: loggablePath(request.url ?? "") });
  }

  function refuseSocket(ws: WebSocket, request: IncomingMessage, err: unknown): void {
    const error = report(request, err);
    settle(request.socket);
    closeWithError(ws, error, limits);
  }

  async function subscribe(ws: WebSocket, socket: Duplex, request: IncomingMessage, route: WsRoute & { kind: "subscribe" }, url: URL) {
    const topic = topicParam(plateParam(route.plate), route.channel, patternQuery(url.searchParams.get("pattern")));
    const auth = await authenticate(ws, request, topic.plateId);
    if (auth === undefined) return;
    services.tenancy.authorize(auth.key, "subscribe", topic);
    const filter = readFilterParam(url.searchParams.get("filter"));
    await open(ws, socket, request, { plateId: topic.plateId, keyId: auth.key.id, wire: "v1", asked: [{ topic, since: auth.since ?? sinceQuery(url), filter }] });
  }

  async function realtime(ws: WebSocket, socket: Duplex, request: IncomingMessage, route: WsRoute & { kind: "realtime" }, url: URL) {
    const plateId = plateParam(route.plate);
    const asked = realtimeQuery(plateId, url.searchParams, config.maxSubscriptionsPerConnection);
    const credential = await realtimeCredential(services, plateId, request.headers.authorization, url.searchParams.get("token") ?? undefined, () =>
      firstFrameAuth(ws, config.wsAuthTimeoutMs),
    );
    if (credential === undefined) return;
    for (const { topic } of asked) credential.grant.subscribe(topic);
    await open(ws, socket, request, { plateId, keyId: credential.keyId, wire: "v2", asked, grant: credential.grant, ...(credential.claims === undefined ? {} : { claims: credential.claims }) });
  }

  async function connectWithToken(ws: WebSocket, socket: Duplex, request: IncomingMessage, route: WsRoute & { kind: "token" }, url: URL) {
    // `?since=` resumes a one-topic path (its only topic); `since.<channel>` one topic of several.
    const since = sinceQuery(url);
    await openWithClientToken(
      services,
      plateParam(route.plate),
      route.token,
      (topic) => url.searchParams.get(`since.${topic.channel}`) || since,
      (opening) => open(ws, socket, request, opening),
      readFilterParam(url.searchParams.get("filter")),
    );
  }

  async function open(ws: WebSocket, socket: Duplex, request: IncomingMessage, opening: Opening) {
    settle(socket);
    if (ws.readyState !== ws.OPEN) return;
    const options = {
      plateId: opening.plateId,
      keyId: opening.keyId,
      clientId: services.realtime.newClientId(),
      wire: opening.wire,
      maxOverlapChannels: config.maxOverlapChannels,
    };
    const conn =
      opening.wire === "v1"
        ? new WsConnection(ws, socket, options, limits)
        : new WsConnection(ws, socket, options, limits, (c, frame) => services.realtime.receive(c, frame));
    if (opening.wire === "v2" && opening.grant !== undefined) services.realtime.register(conn, opening.grant, opening.token, opening.claims);
    await services.subscriptions.open(conn, opening.asked, {
      maxDurationMs: opening.maxDurationMs ?? 0,
      requestId: requestIds.get(request),
      slot: opening.slot,
      filter: opening.filter,
      refuse: (err) => report(request, err),
    });
  }

  /**
   * The key of the upgrade's `Authorization` header, or of the first frame (`{"auth":"<key>"}`,
   * perhaps with `"since"`) within `WS_AUTH_TIMEOUT_MS`. `undefined` when the socket closed first.
   */
  async function authenticate(
    ws: WebSocket,
    request: IncomingMessage,
    plateId: PlateId,
  ): Promise<{ key: KeyRecord; since?: string } | undefined> {
    const header = request.headers.authorization;
    if (header !== undefined) return { key: await services.tenancy.authenticate(plateId, header) };
    const auth = await firstFrameAuth(ws, config.wsAuthTimeoutMs);
    if (auth === undefined) return undefined;
    if (auth.signed === true) throw new PlateError("bad_request", "Signed client tokens open route 9 (/{plateId}/realtime) only.");
    const key = await services.tenancy.authenticateSecret(plateId, auth.key);
    return auth.since === undefined ? { key } : { key, since: auth.since };
  }

  /**
   * Before the handshake, refuses with the code's status and the spec's error body, then closes:
   * for an upgrade that cannot be routed, or that failed before it was answered.
   */
  function refuseHandshake(socket: Duplex, request: IncomingMessage, err: unknown): void {
    const error = report(request, err);
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const answer = errorAnswer(error);
    const id = requestIds.get(request);
    const headers: Record<string, string> = { ...answer.headers, ...(id === undefined ? {} : { "X-Request-Id": id }), ...NO_SNIFF, Connection: "close" };
    // As `ws` aborts a handshake: the socket goes once the answer is out, whatever the client does.
    socket.once("finish", () => socket.destroy());
    socket.end(`${rawHead(answer.status, headers)}\r\n${answer.body}`);
  }

  /** Routes an upgrade and hands it to `ws`; throws to refuse it before the handshake. */
  function upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    requestIds.set(request, requestIdOf(request.headers["x-request-id"]));
    const url = requestUrl(request.url);
    const route = wsRoute(url.pathname);
    if (route === undefined) throw new PlateError("not_found", "No WebSocket route here.");
    const cors = corsHeaders(config.corsOrigins, request.headers.origin);
    if (config.corsOrigins !== "*" && request.headers.origin !== undefined && cors["Access-Control-Allow-Origin"] === undefined) {
      socket.end("HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    if (!pending.tryAdd(socket, request.socket.remoteAddress ?? "")) {
      // A place frees as soon as a pending socket authenticates; all of them within WS_AUTH_TIMEOUT_MS.
      const retryAfterS = Math.ceil(config.wsAuthTimeoutMs / 1000);
      throw new PlateError("rate_limited", "Too many WebSockets are waiting to authenticate; retry later.", { retryAfterS });
    }
    socket.once("close", onPendingClose);
    wss.handleUpgrade(request, socket, head, (ws) => {
      // `ws` closes the socket itself on a protocol error; the listener only keeps the error from
      // being thrown as unhandled.
      ws.on("error", ignoreError);
      acceptSocket(ws, limits);
      // After the handshake a failure is told as every refusal is: error frame, then close.
      try {
        const session = services.draining()
          ? Promise.reject(new PlateError("shutting_down", "This node is shutting down; connect to another."))
          : route.kind === "subscribe"
            ? subscribe(ws, socket, request, route, url)
            : route.kind === "realtime"
              ? realtime(ws, socket, request, route, url)
              : connectWithToken(ws, socket, request, route, url);
        session.catch((err: unknown) => refuseSocket(ws, request, err));
      } catch (err) {
        refuseSocket(ws, request, err);
      }
    });
  }

  /** The `upgrade` listener of the node's server: nothing a request carries throws out of it. */
  return function onUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node leaves an upgrading socket without an `error` listener (its docs say so): a reset while
    // a refusal is written would be thrown as unhandled and end the process.
    socket.on("error", ignoreError);
    try {
      upgrade(request, socket, head);
    } catch (err) {
      refuseHandshake(socket, request, err);
    }
  };
}

/**
 * Waits for the client's first frame and reads `{"auth":"<key>"}` from it. Rejects with
 * `unauthorized` after `timeoutMs` and `bad_request` for any other first frame.
 */
function firstFrameAuth(ws: WebSocket, timeoutMs: number): Promise<{ key: string; since?: string; signed?: true } | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new PlateError("unauthorized", `No {"auth":"<key>"} frame within ${timeoutMs} ms.`));
    }, timeoutMs);
    const onMessage = (data: RawData, isBinary: boolean) => {
      cleanup();
      const frame = isBinary ? undefined : parseClientFrame(frameText(data));
      if (frame?.type === "auth") resolve(frame);
      else reject(new PlateError("bad_request", 'The first frame must be {"auth":"<your API key>"}.'));
    };
    const onClose = () => {
      cleanup();
      resolve(undefined);
    };
    const cleanup = () => {
      clearTimeout(timer);
      ws.off("message", onMessage);
      ws.off("close", onClose);
    };
    ws.on("message", onMessage);
    ws.on("close", onClose);
  });
}

/** `?since=<id>`: resume after that id (for clients that send no auth frame, as on token paths). */
function sinceQuery(url: URL): string | undefined {
  return url.searchParams.get("since") || undefined;
}

/** The WebSocket routes of the route table, by what they open. */
function wsRoute(pathname: string): WsRoute | undefined {
  const match = matchRoute("GET", pathname, upgradable);
  if (match === undefined) return undefined;
  const { plateId, channel, token } = match.params as Record<string, string>;
  switch (match.route.name) {
    case "subscribeWs":
    case "subscribeWsLegacy":
      return { kind: "subscribe", plate: plateId!, channel: channel! };
    case "connectToken":
      return { kind: "token", plate: plateId!, token: token! };
    case "realtime":
      return { kind: "realtime", plate: plateId! };
    default:
      return undefined;
  }
}

function ignoreError(): void {}

/** Routes a WebSocket upgrade may reach (a constant: `matchRoute` keeps its routes per filter). */
function upgradable(route: Route): boolean {
  return route.upgrade !== false;
}
