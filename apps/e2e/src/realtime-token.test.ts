import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "@plate/testing";
import { MAX_QUEUED_PUBLISHES, PlateClient, PlateClientError, realtimeWithToken } from "@plate/client";
import type { Envelope, RealtimeConnection, RealtimeOptions, RealtimePublished } from "@plate/client";

import { Seen, Watched } from "./realtime-support.js";
import { KEYS, startNode } from "./support.js";
import type { Node } from "./support.js";
import { createSigningKey, mintToken } from "./tokens.js";
import type { SigningKey, UserClaims } from "./tokens.js";

/**
 * @plate/client's realtime connection opened with a `tokenProvider` (signed client tokens, route
 * 11) against a real edge node that allows no clock skew: it refreshes short-lived tokens before
 * they expire (a WebSocket on the live socket, SSE by reopening the stream) without losing a
 * message, reconnects after `token_expired`, and publishes from the connection (route 12) with
 * `from`, refusals and `self: false`.
 */

const ADMIN_TOKEN = "admin-token-for-token-tests-0123456";

/** A backend's token endpoint for one user: counts its calls, and fails while `failing`. */
class Backend {
  calls = 0;
  failing = false;

  constructor(
    private readonly claims: UserClaims,
    private readonly seconds = 60,
  ) {}

  readonly tokenProvider = async (): Promise<string> => {
    this.calls += 1;
    if (this.failing) throw new Error("the backend is down");
    return mintToken(key, this.claims, this.seconds);
  };
}

let node: Node;
let key: SigningKey;
let plate: PlateClient;
let channels = 0;
const channel = (what: string) => `tok-${++channels}-${what}`;

const open: RealtimeConnection[] = [];
afterEach(() => {
  for (const rt of open.splice(0)) rt.close();
});

beforeAll(async () => {
  node = await startNode({ ADMIN_TOKEN, SIGNED_TOKEN_CLOCK_SKEW_S: "0" });
  key = await createSigningKey(node.url, "acme", ADMIN_TOKEN);
  plate = new PlateClient({ url: node.url, plate: "acme", key: KEYS.acme });
});
afterAll(async () => {
  await node?.stop();
});

/** A connection of `backend`'s user, watched. */
function connect(
  watched: Watched,
  backend: Backend,
  transport: "sse" | "ws",
  options: RealtimeOptions = {},
): RealtimeConnection {
  const rt = realtimeWithToken({
    ...watched.options(transport),
    ...options,
    url: node.url,
    plate: "acme",
    tokenProvider: backend.tokenProvider,
    WebSocket: watched.WebSocket,
    fetch: watched.fetch,
  });
  open.push(rt);
  return rt;
}

/** Publishes 0, 1, 2… to `ch` over HTTP, one every 50 ms, until `stop()`; answers how many. */
function keepPublishing(ch: string): { stop(): Promise<number> } {
  let stopped = false;
  let count = 0;
  const loop = (async () => {
    while (!stopped) {
      await plate.publish(ch, count);
      count += 1;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return count;
    },
  };
}

const upTo = (n: number) => [...Array(n).keys()];

describe.each(["sse", "ws"] as const)("a connection with a token provider, over %s", (transport) => {
  it("refreshes 3-second tokens before they expire and keeps its subscription: nothing published meanwhile is lost or comes twice", async () => {
    const ch = channel("refresh");
    const backend = new Backend({ sub: "ann", channels: [ch] }, 3);
    const watched = new Watched();
    const rt = connect(watched, backend, transport);
    const seen = new Seen<number>();
    rt.subscribe(ch, seen.handler, seen.options);
    expect(await eventually(() => seen.subscribed === 1)).toBe(true);

    const publishing = keepPublishing(ch);
    // Four tokens: the connection outlived three of them (each lives 2 to 3 s: `exp` is whole seconds).
    expect(await eventually(() => backend.calls >= 4, 12_000)).toBe(true);
    const count = await publishing.stop();
    expect(await eventually(() => seen.messages.length >= count)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));

    expect(seen.values()).toEqual(upTo(count));
    expect([seen.resets, seen.errors, watched.errors]).toEqual([[], [], []]);
    expect(rt.state).toBe("open");
    if (transport === "ws") {
      // One socket throughout: each fresh token went over it.
      expect([watched.attempts, watched.readies.length, seen.subscribed]).toEqual([1, 1, 1]);
      expect(watched.states).toEqual(["connecting", "open"]);
    } else {
      // A stream per token, each resuming where the last one stopped (one may be opening right now).
      expect(await eventually(() => watched.opened === backend.calls && watched.readies.length === backend.calls)).toBe(
        true,
      );
    }
  }, 30_000);

  it("reconnects with a fresh token after token_expired (its provider failed until then) and resumes where it was", async () => {
    const ch = channel("expired");
    const backend = new Backend({ sub: "ann", channels: [ch] }, 2);
    const watched = new Watched();
    const rt = connect(watched, backend, transport);
    const seen = new Seen<number>();
    rt.subscribe(ch, seen.handler, seen.options);
    expect(await eventually(() => seen.subscribed === 1)).toBe(true);
    backend.failing = true;
    await plate.publish(ch, 0);
    expect(await eventually(() => seen.messages.length === 1)).toBe(true);

    // Every refresh fails: the service ends the connection when the token runs out.
    expect(await eventually(() => watched.errors.some((e) => e.code === "token_expired"), 6_000)).toBe(true);
    await plate.publish(ch, 1);
    await plate.publish(ch, 2);
    backend.failing = false;
    expect(await eventually(() => seen.messages.length === 3 && rt.state === "open")).toBe(true);
    await plate.publish(ch, 3);
    expect(await eventually(() => seen.messages.length === 4)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));

    expect(seen.values()).toEqual([0, 1, 2, 3]);
    const codes = new Set(watched.errors.map((e) => `${e.code} ${e.retryable ? "retried" : "final"}`));
    expect([...codes].sort()).toEqual(["token_expired retried", "token_unavailable retried"]);
    expect(watched.errors.find((e) => e.code === "token_expired")?.details.closeCode).toBe(
      transport === "ws" ? 4401 : undefined,
    );
    expect(watched.states).toEqual(expect.arrayContaining(["reconnecting"]));
    expect(seen.errors).toEqual([]);
  }, 30_000);

  it("adds a subscription to the live connection, and refuses one the token does not allow with forbidden, the others losing nothing", async () => {
    const [a, b, secret] = [channel("a"), channel("b"), channel("secret")];
    const backend = new Backend({ sub: "ann", channels: [a, b] });
    const watched = new Watched();
    const rt = connect(watched, backend, transport);
    const [sa, sb, denied] = [new Seen<number>(), new Seen<number>(), new Seen<number>()];
    rt.subscribe(a, sa.handler, sa.options);
    expect(await eventually(() => sa.subscribed === 1)).toBe(true);

    const publishing = keepPublishing(a);
    expect(await eventually(() => sa.messages.length >= 3)).toBe(true);
    rt.subscribe(b, sb.handler, sb.options);
    expect(await eventually(() => sb.subscribed >= 1)).toBe(true);
    const refused = rt.subscribe(secret, denied.handler, denied.options);
    expect(await eventually(() => denied.errors.length === 1)).toBe(true);
    await plate.publish(b, 100);
    await plate.publish(secret, 200);
    expect(await eventually(() => sb.messages.length === 1)).toBe(true);
    const count = await publishing.stop();
    expect(await eventually(() => sa.messages.length >= count)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));

    expect([denied.errors.map((e) => e.code), refused.state, denied.messages]).toEqual([["forbidden"], "closed", []]);
    expect([sa.values(), sb.values()]).toEqual([upTo(count), [100]]);
    expect(rt.subscriptions.map((s) => [s.name.channel, s.state])).toEqual([
      [a, "live"],
      [b, "live"],
    ]);
    expect(watched.errors).toEqual([]);
    // A WebSocket asks on the live socket; SSE with a token reopens the stream with each
    // subscription in its query (the service takes no token on its change POST).
    if (transport === "ws") expect(watched.opened).toBe(1);
    else expect(watched.opened).toBeGreaterThanOrEqual(3);
  });
});

describe("publishing from a connection", () => {
  it("resolves with the message's id, and another user's connection gets it with from (client id, user) and its event, each way", async () => {
    const room = channel("room");
    const [annWatched, bobWatched] = [new Watched(), new Watched()];
    const ann = connect(annWatched, new Backend({ sub: "ann", channels: [room], publish: [room] }), "ws");
    const bob = connect(bobWatched, new Backend({ sub: "bob", channels: [room], publish: ["tok-*"] }), "ws");
    const [annSeen, bobSeen] = [new Seen(), new Seen()];
    ann.subscribe(room, annSeen.handler, { ...annSeen.options, self: false });
    bob.subscribe(room, bobSeen.handler, { ...bobSeen.options, self: false });
    expect(await eventually(() => annSeen.subscribed === 1 && bobSeen.subscribed === 1)).toBe(true);

    const fromAnn = await ann.publish(room, { text: "hi bob" }, { event: "chat" });
    const fromBob = await bob.publish(room, { text: "hi ann" });
    expect(await eventually(() => annSeen.messages.length === 1 && bobSeen.messages.length === 1)).toBe(true);
    const strip = ({ timestamp, ...rest }: Envelope) => (expect(Date.parse(timestamp)).not.toBeNaN(), rest);
    expect(bobSeen.messages.map(strip)).toEqual([
      {
        type: "message",
        id: fromAnn.id,
        channel: room,
        event: "chat",
        from: { clientId: ann.clientId, user: "ann" },
        message: { text: "hi bob" },
      },
    ]);
    expect(annSeen.messages.map(strip)).toEqual([
      {
        type: "message",
        id: fromBob.id,
        channel: room,
        from: { clientId: bob.clientId, user: "bob" },
        message: { text: "hi ann" },
      },
    ]);

    // A connection opened with an API key publishes too: from names its client, and no user.
    const keyed = new Watched();
    const backend = keyed.client(node.url).realtime(keyed.options("ws"));
    open.push(backend);
    const fromKey = await backend.publish(room, "from the backend's connection");
    expect(await eventually(() => bobSeen.messages.length === 2)).toBe(true);
    expect([bobSeen.messages[1]!.id, bobSeen.messages[1]!.from]).toEqual([fromKey.id, { clientId: backend.clientId }]);
    expect([annWatched.errors, bobWatched.errors, keyed.errors]).toEqual([[], [], []]);
  });

  it("rejects a publish the token does not allow with forbidden, and the connection stays open and publishes where it may", async () => {
    const [room, secret] = [channel("room"), channel("secret")];
    const watched = new Watched();
    const rt = connect(watched, new Backend({ sub: "ann", publish: [room] }), "ws");
    const refused = await rt.publish(secret, "no").catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(PlateClientError);
    expect([(refused as PlateClientError).code, (refused as PlateClientError).retryable]).toEqual(["forbidden", false]);
    const bad = await rt.publish("not a channel name", 1).catch((err: unknown) => (err as PlateClientError).code);
    expect(bad).toBe("invalid_channel");
    expect(await rt.publish(room, "yes")).toEqual({ id: expect.any(String) });
    expect([rt.state, watched.readies.length, watched.attempts, watched.errors]).toEqual(["open", 1, 1, []]);
  });

  it("leaves a connection's own publications out of a subscription made with self: false, and hands them to one made without", async () => {
    const [quiet, echo] = [channel("quiet"), channel("echo")];
    const claims = { channels: [quiet, echo], publish: [quiet, echo] };
    const me = connect(new Watched(), new Backend({ sub: "ann", ...claims }), "ws");
    const other = connect(new Watched(), new Backend({ sub: "bob", ...claims }), "ws");
    const [quietSeen, echoSeen] = [new Seen(), new Seen()];
    me.subscribe(quiet, quietSeen.handler, { ...quietSeen.options, self: false });
    me.subscribe(echo, echoSeen.handler, echoSeen.options);
    expect(await eventually(() => quietSeen.subscribed === 1 && echoSeen.subscribed === 1)).toBe(true);

    await me.publish(quiet, "mine, quiet");
    await me.publish(echo, "mine, echoed");
    await other.publish(quiet, "theirs");
    await plate.publish(quiet, "the backend's");
    expect(await eventually(() => quietSeen.messages.length === 2 && echoSeen.messages.length === 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(quietSeen.messages.map((m) => [m.message, m.from?.user])).toEqual([
      ["theirs", "bob"],
      ["the backend's", undefined],
    ]);
    expect(echoSeen.messages.map((m) => [m.message, m.from])).toEqual([
      ["mine, echoed", { clientId: me.clientId, user: "ann" }],
    ]);
  });

  it("holds publishes made before the connection is open and sends them in order once it is; one past the bound is refused at once", async () => {
    const room = channel("early");
    const listener = connect(new Watched(), new Backend({ sub: "bob", channels: [room] }), "ws");
    const heard = new Seen<number>();
    listener.subscribe(room, heard.handler, heard.options);
    expect(await eventually(() => heard.subscribed === 1)).toBe(true);

    const watched = new Watched();
    const rt = connect(watched, new Backend({ sub: "ann", publish: [room] }), "ws");
    expect(rt.state).toBe("connecting");
    const held = upTo(MAX_QUEUED_PUBLISHES).map((n) => rt.publish(room, n));
    const tooMany = await rt.publish(room, -1).catch((err: unknown) => err);
    expect([(tooMany as PlateClientError).code, rt.state]).toEqual(["rate_limited", "connecting"]);
    const published: RealtimePublished[] = await Promise.all(held);
    expect(await eventually(() => heard.messages.length === MAX_QUEUED_PUBLISHES)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(heard.values()).toEqual(upTo(MAX_QUEUED_PUBLISHES));
    expect(heard.messages.map((m) => m.id)).toEqual(published.map((p) => p.id));
  });

  it("refuses on the client what the service would not take: any publish on SSE, a message over the frame limit; close() rejects what waits", async () => {
    const room = channel("room");
    const backend = new Backend({ sub: "ann", channels: [room], publish: [room] });
    const sse = connect(new Watched(), backend, "sse");
    expect(await sse.publish(room, 1).catch((err: unknown) => (err as PlateClientError).code)).toBe("bad_request");

    const watched = new Watched();
    const ws = connect(watched, backend, "ws");
    const big = await ws.publish(room, "x".repeat(20_000)).catch((err: unknown) => (err as PlateClientError).code);
    expect(big).toBe("payload_too_large");
    expect(await eventually(() => ws.state === "open")).toBe(true);
    expect(await ws.publish(room, "small")).toEqual({ id: expect.any(String) });
    expect([watched.attempts, watched.errors]).toEqual([1, []]);

    const closing = connect(new Watched(), backend, "ws");
    const waiting = closing.publish(room, "never sent").catch((err: unknown) => (err as PlateClientError).code);
    closing.close();
    expect(await waiting).toBe("connection_closed");
    expect(await closing.publish(room, "after").catch((err: unknown) => (err as PlateClientError).code)).toBe(
      "connection_closed",
    );
  });
});
