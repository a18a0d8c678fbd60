import { afterEach, describe, expect, it, vi } from "vitest";
import { PlateClient, realtimePath, subscribePath } from "./client.js";
import { PlateClientError } from "./errors.js";
import type { RealtimeConnection } from "./realtime.js";
import type { Envelope } from "./types.js";
import type { WebSocketLike } from "./ws.js";

/**
 * Filtered subscriptions and volatile metadata (spec section 13), as the client sends them: the
 * requests are read off a fake `fetch` and a fake WebSocket, with no service.
 */

const BASE = "https://plate.test";
const PAID = { equals: { status: "paid" } };
const FAST = { reconnect: { initialDelayMs: 1, maxDelayMs: 1 } } as const;

/** A request the fake `fetch` saw. */
interface Seen {
  readonly url: URL;
  readonly method: string;
  readonly body: unknown;
}

/** An SSE stream the fake `fetch` answered, which the test writes events into. */
interface Stream {
  readonly url: URL;
  send(event: string, data: unknown): void;
  /** The service ends the stream. */
  end(): void;
}

/**
 * A `fetch` that answers each GET of an event stream with `stream(url)` (a stream, or an error
 * body), and every other request with `answer(seen)`.
 */
function fakeFetch(
  options: {
    stream?: (url: URL) => { status: number; error: string } | undefined;
    answer?: (seen: Seen) => { status: number; body: unknown };
  } = {},
) {
  const seen: Seen[] = [];
  const streams: Stream[] = [];
  // The client calls `fetch` with a URL or its text, never a Request.
  const impl = (input: string | URL, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(input);
    const method = init.method ?? "GET";
    const body = typeof init.body === "string" ? (JSON.parse(init.body) as unknown) : undefined;
    seen.push({ url, method, body });
    if (method === "GET") {
      const refused = options.stream?.(url);
      if (refused !== undefined) return Promise.resolve(errorResponse(refused.status, refused.error));
      let controller!: ReadableStreamDefaultController<Uint8Array>;
      const readable = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
      init.signal?.addEventListener("abort", () => controller.error(new Error("aborted")));
      const encoder = new TextEncoder();
      streams.push({
        url,
        send: (event, data) => controller.enqueue(encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)),
        end: () => controller.close(),
      });
      return Promise.resolve(new Response(readable, { headers: { "content-type": "text/event-stream" } }));
    }
    const { status, body: answer } = options.answer?.({ url, method, body }) ?? { status: 200, body: { data: {} } };
    return Promise.resolve(new Response(JSON.stringify(answer), { status, headers: { "content-type": "application/json" } }));
  };
  return { fetch: impl as typeof fetch, seen, streams };
}

function errorResponse(status: number, code: string): Response {
  return new Response(JSON.stringify({ error: { code, message: `refused: ${code}` } }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** A WebSocket the test plays the service's side of: what the client sent, frames to it, a drop. */
class FakeSocket implements WebSocketLike {
  static opened: FakeSocket[] = [];
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: Record<string, unknown>[] = [];

  constructor(readonly url: string) {
    FakeSocket.opened.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(): void {
    this.readyState = 3;
  }

  /** A frame from the service. */
  frame(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The connection drops with no close frame. */
  drop(): void {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: "" });
  }

  /** The frames of one type the client sent. */
  of(type: string): Record<string, unknown>[] {
    return this.sent.filter((f) => f.type === type);
  }
}

const envelope = (id: string, channel: string, message: unknown, extra: object = {}): Envelope => ({
  type: "message",
  id,
  channel,
  message,
  timestamp: "2026-12-01T00:00:00.000Z",
  ...extra,
});

const open: RealtimeConnection[] = [];
const stops: (() => void)[] = [];
afterEach(() => {
  for (const rt of open.splice(0)) rt.close();
  for (const stop of stops.splice(0)) stop();
  FakeSocket.opened = [];
});

/** A realtime connection over the fake WebSocket, with a key, whose first `ready` came. */
async function wsConnection(): Promise<{ rt: RealtimeConnection; socket: () => FakeSocket }> {
  const plate = new PlateClient({ url: BASE, plate: "demo", key: "k", WebSocket: FakeSocket });
  const rt = plate.realtime({ transport: "ws", ...FAST });
  open.push(rt);
  const socket = () => FakeSocket.opened.at(-1)!;
  await vi.waitFor(() => expect(socket().of("auth")).toHaveLength(1));
  socket().frame({ type: "ready", clientId: "c1", subscriptions: [] });
  return { rt, socket };
}

describe("publishing with volatile metadata", () => {
  it("sends volatile beside the message and the event, and leaves it out when not given", async () => {
    const { fetch, seen } = fakeFetch({
      answer: () => ({ status: 200, body: { data: { id: "1", channel: "orders", timestamp: "t" } } }),
    });
    const plate = new PlateClient({ url: BASE, plate: "demo", key: "k", fetch });
    await plate.publish("orders", { status: "paid" }, { event: "update", volatile: { trace: "abc" } });
    await plate.publish("orders", 1);
    expect(seen.map((s) => [s.url.pathname, s.body])).toEqual([
      ["/demo/pubsub/orders/publish", { message: { status: "paid" }, event: "update", volatile: { trace: "abc" } }],
      ["/demo/pubsub/orders/publish", { message: 1 }],
    ]);
  });

  it("sends volatile in a realtime publish frame, and hands a delivered message's volatile to the handler", async () => {
    const { rt, socket } = await wsConnection();
    const got: Envelope[] = [];
    rt.subscribe("orders", (m) => got.push(m));
    const published = rt.publish("orders", { n: 1 }, { volatile: { typing: false } });
    const [frame] = socket().of("publish");
    expect(frame).toEqual({ type: "publish", ref: expect.any(Number), channel: "orders", message: { n: 1 }, volatile: { typing: false } });
    socket().frame({ type: "published", ref: frame!.ref, id: "7" });
    await expect(published).resolves.toEqual({ id: "7" });

    const [subscribe] = socket().of("subscribe");
    socket().frame({ type: "subscribed", ref: subscribe!.ref, channel: "orders", position: "6" });
    socket().frame(envelope("7", "orders", { n: 1 }, { volatile: { typing: false } }));
    expect(got.map((m) => m.volatile)).toEqual([{ typing: false }]);
  });
});

describe("a filtered realtime subscription", () => {
  it("sends its filter in the WebSocket subscribe frame, and again with its since after a reconnect", async () => {
    const { rt, socket } = await wsConnection();
    const filter: Record<string, unknown> = { ...PAID };
    rt.subscribe("orders", () => undefined, { filter, self: false });
    // The client keeps its own copy: changing the caller's object later changes nothing.
    filter.equals = { status: "refunded" };
    const first = socket();
    const [asked] = first.of("subscribe");
    expect(asked).toEqual({ type: "subscribe", ref: expect.any(Number), channel: "orders", self: false, filter: PAID });
    first.frame({ type: "subscribed", ref: asked!.ref, channel: "orders", position: "5" });
    first.frame(envelope("6", "orders", { status: "paid" }));

    first.drop();
    await vi.waitFor(() => expect(FakeSocket.opened).toHaveLength(2));
    await vi.waitFor(() => expect(socket().of("auth")).toHaveLength(1));
    socket().frame({ type: "ready", clientId: "c2", subscriptions: [] });
    expect(socket().of("subscribe")).toEqual([
      { type: "subscribe", ref: expect.any(Number), channel: "orders", since: "6", self: false, filter: PAID },
    ]);
  });

  it("throws invalid_filter at once for a filter that is not a JSON object, and asks for nothing", async () => {
    const { rt, socket } = await wsConnection();
    for (const filter of [[{ equals: { a: 1 } }], null, { n: 10n }]) {
      expect(() => rt.subscribe("orders", () => undefined, { filter: filter as never })).toThrow(
        expect.objectContaining({ code: "invalid_filter" }),
      );
    }
    expect(rt.subscriptions).toEqual([]);
    expect(socket().of("subscribe")).toEqual([]);
  });

  it("ends with invalid_filter on its onError when the service refuses the filter, and the connection stays open", async () => {
    const { rt, socket } = await wsConnection();
    const errors: PlateClientError[] = [];
    const sub = rt.subscribe("orders", () => undefined, { filter: { nonsense: {} }, onError: (e) => errors.push(e) });
    const [asked] = socket().of("subscribe");
    socket().frame({ type: "error", ref: asked!.ref, error: { code: "invalid_filter", message: "unknown keyword nonsense" } });
    expect(errors.map((e) => [e.code, e.retryable])).toEqual([["invalid_filter", false]]);
    expect([sub.state, rt.state]).toEqual(["closed", "open"]);
  });

  it("gets no message of its channel before the service confirmed it with its filter (another subscription's are not its)", async () => {
    const { rt, socket } = await wsConnection();
    const filtered: string[] = [];
    const all: string[] = [];
    rt.subscribe({ pattern: "ord*" }, (m) => all.push(m.id));
    rt.subscribe("orders", (m) => filtered.push(m.id), { filter: PAID });
    const [pattern, channel] = socket().of("subscribe");
    socket().frame({ type: "subscribed", ref: pattern!.ref, pattern: "ord*", position: "1" });
    socket().frame(envelope("2", "orders", { status: "pending" }));
    socket().frame({ type: "subscribed", ref: channel!.ref, channel: "orders", position: "2" });
    socket().frame(envelope("3", "orders", { status: "paid" }));
    expect([all, filtered]).toEqual([["2", "3"], ["3"]]);
  });

  it("over SSE with a key, carries filter.<name> in the stream's query and the filter in a later subscribe's POST", async () => {
    const { fetch, seen, streams } = fakeFetch();
    const plate = new PlateClient({ url: BASE, plate: "demo", key: "k", fetch });
    const rt = plate.realtime({ transport: "sse", ...FAST });
    open.push(rt);
    rt.subscribe("orders", () => undefined, { filter: PAID });
    rt.subscribe({ pattern: "user:*" }, () => undefined, { filter: { exists: "name" } });
    rt.subscribe("plain", () => undefined);
    await vi.waitFor(() => expect(streams).toHaveLength(1));
    const query = streams[0]!.url.searchParams;
    expect([query.getAll("channel"), query.getAll("pattern")]).toEqual([["orders", "plain"], ["user:*"]]);
    expect(JSON.parse(query.get("filter.orders")!)).toEqual(PAID);
    expect(JSON.parse(query.get("filter.user:*")!)).toEqual({ exists: "name" });
    expect(query.has("filter.plain")).toBe(false);

    streams[0]!.send("ready", {
      type: "ready",
      clientId: "c1",
      subscriptions: [{ channel: "orders" }, { channel: "plain" }, { pattern: "user:*" }],
    });
    await vi.waitFor(() => expect(rt.state).toBe("open"));
    rt.subscribe("later", () => undefined, { filter: { range: { total: { gte: 100 } } } });
    await vi.waitFor(() => expect(seen.filter((s) => s.method === "POST")).toHaveLength(1));
    const post = seen.find((s) => s.method === "POST")!;
    expect([post.url.pathname, post.body]).toEqual([
      "/demo/realtime/c1",
      { subscribe: [{ channel: "later", filter: { range: { total: { gte: 100 } } } }] },
    ]);
  });

  it("over SSE, a stream refused with invalid_filter ends only the subscription whose filter was refused", async () => {
    const bad = { nonsense: {} };
    const { fetch, streams } = fakeFetch({
      stream: (url) => (url.searchParams.has("filter.bad") ? { status: 400, error: "invalid_filter" } : undefined),
      answer: ({ body }) =>
        JSON.stringify(body).includes("nonsense")
          ? { status: 400, body: { error: { code: "invalid_filter", message: "unknown keyword nonsense" } } }
          : { status: 200, body: { data: {} } },
    });
    const plate = new PlateClient({ url: BASE, plate: "demo", key: "k", fetch });
    const rt = plate.realtime({ transport: "sse", ...FAST });
    open.push(rt);
    const errors: string[] = [];
    const refused = rt.subscribe("bad", () => undefined, { filter: bad, onError: (e) => errors.push(e.code) });
    const good = rt.subscribe("good", () => undefined, { filter: PAID });
    await vi.waitFor(() => expect(streams).toHaveLength(1));
    streams[0]!.send("ready", { type: "ready", clientId: "c1", subscriptions: [] });
    await vi.waitFor(() => expect(refused.state).toBe("closed"));
    expect(errors).toEqual(["invalid_filter"]);
    streams[0]!.send("subscribed", { channel: "good", position: "1" });
    await vi.waitFor(() => expect(good.state).toBe("live"));
    expect(rt.state).toBe("open");
  });
});

describe("a client path's subscription with a filter", () => {
  it("asks for one of a path's own channels again with the filter, from the position the path started at", async () => {
    const rt = realtimePath("/demo/s/tok", { base: BASE, transport: "ws", WebSocket: FakeSocket, ...FAST });
    open.push(rt);
    const sub = rt.subscribe("orders", () => undefined, { filter: PAID });
    await vi.waitFor(() => expect(FakeSocket.opened).toHaveLength(1));
    const socket = FakeSocket.opened[0]!;
    socket.frame({ type: "ready", clientId: "c1", subscriptions: [{ channel: "orders", position: "4" }] });
    expect(socket.sent.map(({ ref: _ref, ...frame }) => frame)).toEqual([
      { type: "unsubscribe", channel: "orders" },
      { type: "subscribe", channel: "orders", since: "4", filter: PAID },
    ]);
    expect(sub.state).toBe("pending");
  });

  it("ends with bad_request on a path minted for one channel (a v1 connection), which takes no filter", async () => {
    const rt = realtimePath("/demo/s/tok", { base: BASE, transport: "ws", WebSocket: FakeSocket, ...FAST });
    open.push(rt);
    const errors: string[] = [];
    const sub = rt.subscribe("orders", () => undefined, { filter: PAID, onError: (e) => errors.push(e.code) });
    await vi.waitFor(() => expect(FakeSocket.opened).toHaveLength(1));
    FakeSocket.opened[0]!.frame({ type: "ready", clientId: "c1", channel: "orders", pattern: false });
    expect([sub.state, errors]).toEqual(["closed", ["bad_request"]]);
  });
});

describe("v1 subscriptions and client paths with a filter", () => {
  it("subscribes with ?filter= on every connect, beside ?pattern=true", async () => {
    const { fetch, streams } = fakeFetch();
    const plate = new PlateClient({ url: BASE, plate: "demo", key: "k", fetch });
    stops.push(plate.subscribe("ord*", () => undefined, { pattern: true, filter: PAID, ...FAST }));
    await vi.waitFor(() => expect(streams).toHaveLength(1));
    const url = streams[0]!.url;
    expect([url.pathname, url.searchParams.get("pattern"), JSON.parse(url.searchParams.get("filter")!)]).toEqual([
      "/demo/pubsub/ord*/subscribe",
      "true",
      PAID,
    ]);
    streams[0]!.send("ready", { type: "ready", clientId: "c1", channel: "ord*", pattern: true, position: "3" });
    // The node drains: the next stream resumes with the same filter.
    streams[0]!.send("error", { error: { code: "shutting_down", message: "draining" } });
    streams[0]!.end();
    await vi.waitFor(() => expect(streams).toHaveLength(2));
    expect([streams[1]!.url.searchParams.get("lastEventId"), JSON.parse(streams[1]!.url.searchParams.get("filter")!)]).toEqual([
      "3",
      PAID,
    ]);
  });

  it("subscribes with a client path and ?filter=, and ends with invalid_filter when the service refuses it", async () => {
    const { fetch, seen } = fakeFetch({ stream: () => ({ status: 400, error: "invalid_filter" }) });
    const errors: PlateClientError[] = [];
    const states: string[] = [];
    stops.push(
      subscribePath("/demo/s/tok", () => undefined, {
        base: BASE,
        fetch,
        filter: PAID,
        onError: (e) => errors.push(e),
        onStateChange: (s) => states.push(s),
      }),
    );
    await vi.waitFor(() => expect(states.at(-1)).toBe("closed"));
    expect(seen.map((s) => [s.url.pathname, s.url.searchParams.get("filter")])).toEqual([["/demo/s/tok", JSON.stringify(PAID)]]);
    expect(errors.map((e) => [e.code, e.retryable])).toEqual([["invalid_filter", false]]);
  });

  it("throws invalid_filter before connecting for a filter that is not a JSON object", () => {
    const { fetch, seen } = fakeFetch();
    const plate = new PlateClient({ url: BASE, plate: "demo", key: "k", fetch });
    expect(() => plate.subscribe("orders", () => undefined, { filter: [] as never })).toThrow(PlateClientError);
    expect(seen).toEqual([]);
  });

  it("mints a client path with a filter in the POST body", async () => {
    const minted = { path: "/demo/s/tok", token: "tok", channel: "orders", pattern: false, expiresAt: "t", maxUses: 1, maxDuration: 0 };
    const { fetch, seen } = fakeFetch({ answer: () => ({ status: 200, body: { data: minted } }) });
    const plate = new PlateClient({ url: BASE, plate: "demo", key: "k", fetch });
    const path = await plate.clientPath("orders", { filter: PAID, maxUses: 0 });
    expect(path.url).toBe(`${BASE}/demo/s/tok`);
    expect(seen.map((s) => [s.method, s.url.pathname, s.body])).toEqual([
      ["POST", "/demo/pubsub/orders/client", { max_uses: 0, filter: PAID }],
    ]);
    await expect(plate.clientPath("orders", { filter: "status == paid" as never })).rejects.toMatchObject({ code: "invalid_filter" });
    expect(seen).toHaveLength(1);
  });
});
