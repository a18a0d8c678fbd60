/** How the harness talks to one server: where to publish and subscribe, and with what headers. */
export interface Target {
  /** Shown in reports, e.g. `plate-embedded`, `nchan-redis`. */
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** The server's process ids, for memory readings (Nchan: master and worker). */
  readonly pids: readonly number[];
  /**
   * Text that tells a subscription is live, after the response headers: Plate's `ready` (its
   * headers go out once the broker subscription is active anyway); none for Nchan. Nchan on Redis
   * answers before its Redis subscription is live, which is why every run warms up first.
   */
  readonly readyMarker: string | undefined;
  /** The request line's path and the headers of a publish to `channel`. */
  publish(channel: string): { path: string; headers: string; body: (payload: string) => string };
  /**
   * Path and extra headers of an SSE subscription to `channel`, only to messages matching `filter`
   * (JSON text) when given; throws for a filter on a server without filters (Nchan).
   */
  sse(channel: string, filter?: string): { path: string; headers: string };
  /** Path and extra headers of a WebSocket subscription to `channel`, filtered as `sse`'s. */
  ws(channel: string, filter?: string): { path: string; headers: string };
  /**
   * Path and headers of a WebSocket that publishes with Plate's `publish` frames, each answered
   * (route 9, `GET /{plateId}/realtime`, `WsPublisher`); undefined for a server without it.
   */
  readonly wsPublish: { path: string; headers: string } | undefined;
  /**
   * Path, headers and body of a request that publishes several messages to `channel` in order
   * (Plate's route 12, `POST /{plateId}/publish`); undefined for a server without one.
   */
  readonly publishBatch: ((channel: string) => { path: string; headers: string; body: (payloads: readonly string[]) => string }) | undefined;
}

/** Plate: publish with a JSON body and a key; subscribe with the same key. */
export function plateTarget(options: {
  name: string;
  port: number;
  plate: string;
  key: string;
  pids: readonly number[];
}): Target {
  const auth = `Authorization: Bearer ${options.key}\r\n`;
  return {
    name: options.name,
    host: "127.0.0.1",
    port: options.port,
    pids: options.pids,
    readyMarker: '"type":"ready"',
    publish: (channel) => ({
      path: `/${options.plate}/pubsub/${channel}/publish`,
      headers: auth + "Content-Type: application/json\r\n",
      body: (payload) => '{"message":' + payload + "}",
    }),
    // Route 13: a v1 subscription's filter is its `filter` query parameter, URL-encoded JSON.
    sse: (channel, filter) => ({
      path: `/${options.plate}/pubsub/${channel}/subscribe${filterQuery(filter)}`,
      headers: auth,
    }),
    ws: (channel, filter) => ({ path: `/${options.plate}/pubsub/${channel}/ws${filterQuery(filter)}`, headers: auth }),
    // The bootstrap key has every scope, publish among them: it may publish anywhere in its plate.
    wsPublish: { path: `/${options.plate}/realtime`, headers: auth },
    publishBatch: (channel) => ({
      path: `/${options.plate}/publish`,
      headers: auth + "Content-Type: application/json\r\n",
      body: (payloads) => '{"messages":[' + payloads.map((payload) => '{"channel":"' + channel + '","message":' + payload + "}").join(",") + "]}",
    }),
  };
}

/** Where a server that is not Plate listens: on loopback, with no ready marker (see `Target`). */
interface ServerAt {
  readonly name: string;
  readonly port: number;
  readonly pids: readonly number[];
}

function loopback(options: ServerAt): Pick<Target, "name" | "host" | "port" | "pids" | "readyMarker"> {
  return { name: options.name, host: "127.0.0.1", port: options.port, pids: options.pids, readyMarker: undefined };
}

/** Nchan with the side-by-side configuration: `/pub?id=` publishes the body verbatim, `/sub/` subscribes. */
export function nchanTarget(options: ServerAt): Target {
  return {
    ...loopback(options),
    publish: (channel) => ({
      path: `/pub?id=${channel}`,
      headers: "Content-Type: application/json\r\n",
      body: (payload) => payload,
    }),
    sse: (channel, filter) => ({ path: `/sub/${unfiltered(channel, filter)}`, headers: "" }),
    ws: (channel, filter) => ({ path: `/sub/${unfiltered(channel, filter)}`, headers: "" }),
    // Nchan's publisher location can take WebSocket frames too (`nchan_publisher websocket`,
    // each answered with the channel's info); this configuration publishes over HTTP only.
    wsPublish: undefined,
    publishBatch: undefined,
  };
}

/** W3's bare Node reference: it takes publishes and nothing else (no subscriber of any kind). */
export function bareTarget(options: ServerAt): Target {
  const none = (): never => {
    throw new Error("the bare node takes publishes only");
  };
  return {
    ...loopback(options),
    publish: () => ({ path: "/publish", headers: "Content-Type: application/json\r\n", body: (payload) => '{"message":' + payload + "}" }),
    sse: none,
    ws: none,
    wsPublish: undefined,
    publishBatch: undefined,
  };
}

/** The query string of a Plate subscription with `filter` (JSON text), or none. */
function filterQuery(filter: string | undefined): string {
  return filter === undefined ? "" : `?filter=${encodeURIComponent(filter)}`;
}

/** `channel`; throws when a filter is asked of a server that has none. */
function unfiltered(channel: string, filter: string | undefined): string {
  if (filter !== undefined) throw new Error("Nchan has no subscription filters");
  return channel;
}
