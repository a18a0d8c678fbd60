import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { eventually, freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { PlateClient, PlateClientError, realtimePath } from "@plate/client";
import type { RealtimeConnection } from "@plate/client";

import { Seen, Watched, text } from "./realtime-support.js";
import { KEYS, startNode } from "./support.js";
import type { Node } from "./support.js";

/**
 * @plate/client's realtime connection (route 9) against real edge nodes: many subscriptions on
 * one socket, each message to every matching handler once, unsubscribe, refusals, client paths
 * minted for several channels, and, on Redis, a node drained or killed under the connection: it
 * comes back with one socket and resumes every subscription without losing a message.
 */

const ADMIN_TOKEN = "admin-token-for-realtime-tests-0123";
/** Open connections by the node's own count (`plate_connections`, every transport). */
async function connections(url: string): Promise<number> {
  const metrics = await (await fetch(`${url}/metrics`)).text();
  let total = 0;
  for (const [, value] of metrics.matchAll(/^plate_connections(?:\{[^}]*\})? (\d+)$/gm)) total += Number(value);
  return total;
}

const open: RealtimeConnection[] = [];
/** Remembers a connection, to close it after the test whatever happens. */
function kept(rt: RealtimeConnection): RealtimeConnection {
  open.push(rt);
  return rt;
}
afterEach(() => {
  for (const rt of open.splice(0)) rt.close();
});

/** A key of the plate that may only subscribe, to channels of `pattern`. */
async function limitedKey(pattern: string): Promise<string> {
  const res = await fetch(`${node.url}/admin/plates/acme/keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scopes: ["subscribe"], channels: [pattern] }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { data: { secret: string } }).data.secret;
}

let node: Node;
let plate: PlateClient;
let channels = 0;
const channel = (what: string) => `rt-${++channels}-${what}`;

beforeAll(async () => {
  node = await startNode({ ADMIN_TOKEN });
  plate = new PlateClient({ url: node.url, plate: "acme", key: KEYS.acme });
});
afterAll(async () => {
  await node?.stop();
});

describe.each(["sse", "ws"] as const)("one realtime connection over %s", (transport) => {
  it("carries every subscription on one socket: the client opens one, the node counts one", async () => {
    const fresh = await startNode();
    try {
      const watched = new Watched();
      const rt = kept(watched.client(fresh.url).realtime(watched.options(transport)));
      const [a, b, p, late] = [new Seen(), new Seen(), new Seen(), new Seen()];
      const names = { a: channel("a"), b: channel("b"), p: channel("p") };
      rt.subscribe(names.a, a.handler, a.options);
      rt.subscribe({ channel: names.b }, b.handler, b.options);
      rt.subscribe({ pattern: `${names.p}:*` }, p.handler, p.options);
      expect(await eventually(() => [a, b, p].every((s) => s.subscribed === 1))).toBe(true);
      // One more while it is open: on the same socket.
      const c = channel("c");
      rt.subscribe(c, late.handler, late.options);
      expect(await eventually(() => late.subscribed === 1)).toBe(true);
      expect(await connections(fresh.url)).toBe(1);
      expect([watched.attempts, watched.opened, watched.readies.length]).toEqual([1, 1, 1]);
      expect(rt.subscriptions.map((s) => [text(s.name), s.state])).toEqual([
        [names.a, "live"],
        [names.b, "live"],
        [`${names.p}:*`, "live"],
        [c, "live"],
      ]);

      const publisher = new PlateClient({ url: fresh.url, plate: "acme", key: KEYS.acme });
      for (const ch of [names.a, names.b, `${names.p}:1`, c]) await publisher.publish(ch, ch);
      expect(await eventually(() => [a, b, p, late].every((s) => s.messages.length === 1))).toBe(true);
      expect([a, b, p, late].map((s) => s.values())).toEqual([[names.a], [names.b], [`${names.p}:1`], [c]]);
      expect(watched.states).toEqual(["connecting", "open"]);

      rt.close();
      expect(await eventually(async () => (await connections(fresh.url)) === 0)).toBe(true);
      expect(watched.states.at(-1)).toBe("closed");
      expect(rt.subscriptions).toEqual([]);
    } finally {
      await fresh.stop();
    }
  });

  it("hands a message to every subscription it matches (a channel, and patterns with * and ?), once each, and it arrives once", async () => {
    const watched = new Watched();
    const rt = kept(watched.client(node.url).realtime(watched.options(transport)));
    const base = channel("m");
    const [exact, star, one] = [new Seen(), new Seen(), new Seen()];
    rt.subscribe(`${base}-x`, exact.handler, exact.options);
    rt.subscribe({ pattern: `${base}-*` }, star.handler, star.options);
    rt.subscribe({ pattern: `${base}-?` }, one.handler, one.options);
    expect(await eventually(() => [exact, star, one].every((s) => s.subscribed === 1))).toBe(true);

    await plate.publish(`${base}-x`, 1); // all three
    await plate.publish(`${base}-yy`, 2); // only *
    await plate.publish(`${base}-z`, 3); // * and ?
    await plate.publish(`${base}`, 4); // none: no "-"
    expect(
      await eventually(() => star.messages.length === 3 && one.messages.length === 2 && exact.messages.length === 1),
    ).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect([exact.values(), star.values(), one.values()]).toEqual([[1], [1, 2, 3], [1, 3]]);
    // Each message came over the connection once, whatever number of subscriptions it matched.
    expect(watched.arrivals).toEqual([
      { channel: `${base}-x`, message: 1, to: [`${base}-x`, `${base}-*`, `${base}-?`] },
      { channel: `${base}-yy`, message: 2, to: [`${base}-*`] },
      { channel: `${base}-z`, message: 3, to: [`${base}-*`, `${base}-?`] },
    ]);
  });

  it("hands a subscription with an event filter only the messages published with that event name", async () => {
    const watched = new Watched();
    const rt = kept(watched.client(node.url).realtime(watched.options(transport)));
    const room = channel("ev");
    const [typing, either, all] = [new Seen(), new Seen(), new Seen()];
    rt.subscribe(room, typing.handler, { ...typing.options, event: "typing" });
    rt.subscribe({ pattern: `${room}*` }, either.handler, { ...either.options, event: ["typing", "joined"] });
    rt.subscribe({ pattern: `${room}?` }, all.handler, all.options);
    expect(await eventually(() => [typing, either, all].every((s) => s.subscribed === 1))).toBe(true);

    await plate.publish(room, 1, { event: "typing" });
    await plate.publish(room, 2);
    await plate.publish(room, 3, { event: "joined" });
    await plate.publish(`${room}x`, 4, { event: "typing" });
    expect(await eventually(() => either.messages.length === 3 && all.messages.length === 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(typing.messages.map((m) => [m.message, m.event])).toEqual([[1, "typing"]]);
    expect(either.values()).toEqual([1, 3, 4]);
    expect(all.messages.map((m) => [m.message, m.event])).toEqual([[4, "typing"]]);
    // The connection saw them all, the unnamed one included.
    expect(watched.arrivals.map((a) => a.message)).toEqual([1, 2, 3, 4]);
  });

  it("stops delivering to a subscription at unsubscribe, keeps the others, and subscribes to it again", async () => {
    const watched = new Watched();
    const rt = kept(watched.client(node.url).realtime(watched.options(transport)));
    const [a, b] = [channel("a"), channel("b")];
    const [first, other] = [new Seen(), new Seen()];
    const sub = rt.subscribe(a, first.handler, first.options);
    rt.subscribe(b, other.handler, other.options);
    expect(await eventually(() => first.subscribed === 1 && other.subscribed === 1)).toBe(true);
    await plate.publish(a, 1);
    expect(await eventually(() => first.messages.length === 1)).toBe(true);

    sub.unsubscribe();
    expect(sub.state).toBe("closed");
    await plate.publish(a, 2);
    await plate.publish(b, 2);
    expect(await eventually(() => other.messages.length === 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(first.values()).toEqual([1]);
    // The node may still send what was published before it took the unsubscribe (an SSE stream's
    // unsubscribe is a POST): the client hands it to no one.
    expect(watched.arrivals.filter((m) => m.channel === a).map((m) => m.to)).toEqual(expect.arrayContaining([[a]]));
    expect(watched.arrivals.filter((m) => m.channel === a && m.message === 2).every((m) => m.to.length === 0)).toBe(
      true,
    );

    // Unsubscribed and subscribed again in one turn: the requests reach the node in order.
    const again = new Seen();
    const second = rt.subscribe(a, again.handler, again.options);
    second.unsubscribe();
    const third = new Seen();
    rt.subscribe(a, third.handler, third.options);
    expect(await eventually(() => third.subscribed === 1)).toBe(true);
    await plate.publish(a, 3);
    expect(await eventually(() => third.messages.length === 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect([first.values(), again.values(), third.values(), other.values()]).toEqual([[1], [], [3], [2]]);
    expect([...first.errors, ...again.errors, ...third.errors, ...watched.errors]).toEqual([]);
    expect(watched.readies).toHaveLength(1);
  });

  it("refuses a subscription the key may not use, with its code, and keeps the connection and the others", async () => {
    const secret = await limitedKey(`allowed-${transport}:*`);
    const watched = new Watched();
    const rt = kept(watched.client(node.url, secret).realtime(watched.options(transport)));
    const [allowed, denied] = [new Seen(), new Seen()];
    rt.subscribe(`allowed-${transport}:1`, allowed.handler, allowed.options);
    expect(await eventually(() => allowed.subscribed === 1)).toBe(true);
    const refused = rt.subscribe(`secret-${transport}`, denied.handler, denied.options);
    expect(await eventually(() => denied.errors.length === 1)).toBe(true);
    expect(denied.errors.map((e) => [e.code, e.retryable])).toEqual([["forbidden", false]]);
    expect(refused.state).toBe("closed");
    // Subscribing twice to one name on one connection is the caller's mistake, told at once.
    let twice: unknown;
    try {
      rt.subscribe(`allowed-${transport}:1`, () => undefined);
    } catch (error) {
      twice = error;
    }
    expect(twice instanceof PlateClientError && twice.code).toBe("conflict");

    await plate.publish(`allowed-${transport}:1`, "still here");
    await plate.publish(`secret-${transport}`, "never");
    expect(await eventually(() => allowed.messages.length === 1)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(denied.messages).toEqual([]);
    expect(watched.states).toEqual(["connecting", "open"]);
    expect(watched.errors).toEqual([]);
  });

  it("refuses only the culprit when a subscription of its first request may not be used", async () => {
    const secret = await limitedKey(`first-${transport}:*`);
    const watched = new Watched();
    const rt = kept(watched.client(node.url, secret).realtime(watched.options(transport)));
    const [allowed, denied, other] = [new Seen(), new Seen(), new Seen()];
    rt.subscribe(`first-${transport}:1`, allowed.handler, allowed.options);
    rt.subscribe(`secret-first-${transport}`, denied.handler, denied.options);
    rt.subscribe({ pattern: `first-${transport}:p*` }, other.handler, other.options);
    expect(
      await eventually(() => allowed.subscribed === 1 && other.subscribed === 1 && denied.errors.length === 1),
    ).toBe(true);
    expect(denied.errors.map((e) => e.code)).toEqual(["forbidden"]);
    await plate.publish(`first-${transport}:1`, 1);
    await plate.publish(`first-${transport}:p1`, 2);
    expect(await eventually(() => allowed.messages.length === 1 && other.messages.length === 1)).toBe(true);
    expect([watched.errors, watched.readies.length, watched.states]).toEqual([[], 1, ["connecting", "open"]]);
  });

  it("tells a resume it cannot honour with onReset for that subscription only, then goes live", async () => {
    const watched = new Watched();
    const rt = kept(watched.client(node.url).realtime(watched.options(transport)));
    const [stale, fresh] = [new Seen(), new Seen()];
    const [a, b] = [channel("a"), channel("b")];
    rt.subscribe(a, stale.handler, { ...stale.options, since: "zzzzzzzz_1-0" });
    rt.subscribe(b, fresh.handler, fresh.options);
    expect(await eventually(() => stale.resets.length === 1 && fresh.subscribed === 1)).toBe(true);
    expect(stale.resets.map((r) => [r.channel, r.reason])).toEqual([[a, "epoch"]]);
    await plate.publish(a, "live");
    expect(await eventually(() => stale.messages.length === 1)).toBe(true);
    expect(fresh.resets).toEqual([]);
  });

  it("opens with a client path minted for several channels and a pattern, delivers each, and goes no further than the path allows", async () => {
    const [a, b, p] = [channel("a"), channel("b"), channel("p")];
    const path = await plate.clientPath(a, { channels: [b], patterns: [`${p}:*`], maxUses: 0 });
    expect([path.channels, path.patterns]).toEqual([expect.arrayContaining([b]), [`${p}:*`]]);
    const watched = new Watched();
    const rt = kept(
      realtimePath(path.path, {
        ...watched.options(transport),
        base: node.url,
        WebSocket: watched.WebSocket,
        fetch: watched.fetch,
      }),
    );
    expect(await eventually(() => watched.readies.length === 1)).toBe(true);
    expect(watched.readies[0]!.subscriptions.map(text).sort()).toEqual([a, b, `${p}:*`].sort());
    const [sa, sb, sp, beyond] = [new Seen(), new Seen(), new Seen(), new Seen()];
    rt.subscribe(a, sa.handler, sa.options);
    rt.subscribe(b, sb.handler, sb.options);
    rt.subscribe({ pattern: `${p}:*` }, sp.handler, sp.options);
    rt.subscribe(channel("elsewhere"), beyond.handler, beyond.options);
    expect(await eventually(() => [sa, sb, sp].every((s) => s.subscribed === 1) && beyond.errors.length === 1)).toBe(
      true,
    );
    expect(beyond.errors.map((e) => e.code)).toEqual(["forbidden"]);
    for (const ch of [a, b, `${p}:1`]) await plate.publish(ch, ch);
    expect(await eventually(() => [sa, sb, sp].every((s) => s.messages.length === 1))).toBe(true);
    expect([sa, sb, sp].map((s) => s.values())).toEqual([[a], [b], [`${p}:1`]]);
    expect(watched.opened).toBe(1);
  });

  it("opens with a client path minted for one channel as a connection of that one subscription", async () => {
    const a = channel("a");
    const { path } = await plate.clientPath(a, { maxUses: 0 });
    const watched = new Watched();
    const rt = kept(
      realtimePath(path, {
        ...watched.options(transport),
        base: node.url,
        WebSocket: watched.WebSocket,
        fetch: watched.fetch,
      }),
    );
    const seen = new Seen();
    rt.subscribe(a, seen.handler, seen.options);
    expect(await eventually(() => seen.subscribed === 1)).toBe(true);
    expect(watched.readies[0]!.subscriptions.map(text)).toEqual([a]);
    await plate.publish(a, "one");
    expect(await eventually(() => seen.messages.length === 1)).toBe(true);
    expect(watched.errors).toEqual([]);
  });

  it("reports a bad key as a final invalid_api_key: the connection and its subscriptions close, with no retry", async () => {
    const watched = new Watched();
    const rt = kept(watched.client(node.url, "not-the-key-0123456789abcdef").realtime(watched.options(transport)));
    const seen = new Seen();
    const sub = rt.subscribe(channel("a"), seen.handler, seen.options);
    expect(await eventually(() => watched.states.includes("closed"))).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    expect(watched.errors.map((e) => [e.code, e.retryable])).toEqual([["invalid_api_key", false]]);
    expect([sub.state, watched.attempts, rt.state]).toEqual(["closed", 1, "closed"]);
  });
});

/**
 * `node dist/main.js` of @plate/edge in its own process, as users run it, so that a test can kill
 * it with SIGKILL: its sockets then end with no close frame and no end of stream.
 */
class EdgeProcess {
  readonly url: string;
  readonly #child: ChildProcess;
  #output = "";
  #exited: Promise<void>;

  constructor(port: number, env: Record<string, string>, dataDir: string) {
    const main = join(dirname(createRequire(import.meta.url).resolve("@plate/edge")), "main.js");
    this.url = `http://127.0.0.1:${port}`;
    this.#child = spawn(process.execPath, [main], {
      env: {
        PATH: process.env.PATH,
        PORT: String(port),
        HOST: "127.0.0.1",
        DATA_DIR: dataDir,
        LOG_LEVEL: "error",
        DEMO_PLATE: "false",
        BOOTSTRAP_PLATES: JSON.stringify(KEYS),
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#child.stdout!.on("data", (chunk: Buffer) => (this.#output += chunk.toString()));
    this.#child.stderr!.on("data", (chunk: Buffer) => (this.#output += chunk.toString()));
    this.#exited = new Promise((resolve) => this.#child.once("exit", () => resolve()));
  }

  async ready(): Promise<void> {
    const up = await eventually(async () => {
      if (this.#child.exitCode !== null) return true;
      return fetch(`${this.url}/readyz`).then(
        (res) => res.status === 200,
        () => false,
      );
    }, 10_000);
    if (!up || this.#child.exitCode !== null) throw new Error(`the node did not start: ${this.#output}`);
  }

  async kill(): Promise<void> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill("SIGKILL");
    await this.#exited;
  }
}

describe("reconnecting on Redis", () => {
  let redis: RedisServer;
  let dataDir: string;
  beforeAll(async () => {
    redis = await startRedis();
    dataDir = await mkdtemp(join(tmpdir(), "plate-realtime-test-"));
  });
  afterAll(async () => {
    await redis?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  /**
   * Three subscriptions on one connection: channels `a` and `b`, and a pattern over `a` and `c`.
   * Messages 0-2 go out live, 3-5 while the node is down (published through another node), 6-7
   * after the connection is back. The channels get all eight, once, in order; the pattern is told
   * with a `reset` that it may have missed some (the service keeps no history for patterns), yet
   * gets `a`'s missed ones by `a`'s replay, each once.
   */
  async function dropAndResume(
    transport: "sse" | "ws",
    start: () => Promise<{ url: string; down(): Promise<void> }>,
  ): Promise<{ watched: Watched; restartedUrl: string }> {
    let subscribed = await start();
    const other = await startNode({ REDIS_URL: redis.url });
    try {
      const via = new PlateClient({ url: other.url, plate: "acme", key: KEYS.acme });
      const base = channel("resume");
      const names = { a: `${base}:x:a`, b: `${base}:b`, c: `${base}:x:c`, p: `${base}:x:*` };
      const watched = new Watched();
      const rt = kept(watched.client(subscribed.url).realtime(watched.options(transport)));
      const [a, b, p] = [new Seen<number>(), new Seen<number>(), new Seen<number>()];
      rt.subscribe(names.a, a.handler, a.options);
      rt.subscribe(names.b, b.handler, b.options);
      rt.subscribe({ pattern: names.p }, p.handler, p.options);
      expect(await eventually(() => [a, b, p].every((s) => s.subscribed === 1))).toBe(true);
      const publish = async (from: number, to: number) => {
        for (let n = from; n < to; n++) for (const ch of [names.a, names.b, names.c]) await via.publish(ch, n);
      };
      await publish(0, 3);
      expect(
        await eventually(() => a.messages.length === 3 && b.messages.length === 3 && p.messages.length === 6),
      ).toBe(true);

      await subscribed.down();
      expect(await eventually(() => watched.states.at(-1) === "reconnecting")).toBe(true);
      expect(rt.subscriptions.map((s) => s.state)).toEqual(["pending", "pending", "pending"]);
      await publish(3, 6);
      subscribed = await start();
      expect(
        await eventually(() => watched.readies.length === 2 && [a, b, p].every((s) => s.subscribed === 2), 10_000),
      ).toBe(true);
      await publish(6, 8);
      const all = [0, 1, 2, 3, 4, 5, 6, 7];
      expect(
        await eventually(() => a.messages.length >= 8 && b.messages.length >= 8 && p.values(names.c).includes(7)),
      ).toBe(true);
      await new Promise((r) => setTimeout(r, 200));

      expect([a.values(), b.values()]).toEqual([all, all]);
      expect([a.resets, b.resets]).toEqual([[], []]);
      expect(p.resets.map((r) => [r.pattern, r.reason])).toEqual([[names.p, "pattern"]]);
      expect(p.values(names.a)).toEqual(all);
      const ofC = p.values(names.c);
      expect(ofC.slice(0, 3)).toEqual([0, 1, 2]);
      expect(ofC.slice(-2)).toEqual([6, 7]);
      expect(ofC).toEqual([...new Set(ofC)].sort((x, y) => x - y));
      // One connection again: the node it is on counts one, and the client had one at a time.
      expect(await connections(subscribed.url)).toBe(1);
      expect(watched.states).toEqual(["connecting", "open", "reconnecting", "open"]);
      expect(watched.opened).toBe(2);
      if (transport === "ws") expect(watched.maxOpen).toBe(1);
      return { watched, restartedUrl: subscribed.url };
    } finally {
      await subscribed.down();
      await other.stop();
    }
  }

  it.each(["sse", "ws"] as const)(
    "over %s, after its node restarts, comes back with one socket and resumes every subscription without losing a message",
    async (transport) => {
      const env = { REDIS_URL: redis.url, PORT: String(await freePort()) };
      const start = async () => {
        const started = await startNode(env);
        let stopped: Promise<void> | undefined;
        return { url: started.url, down: () => (stopped ??= started.stop()) };
      };
      const { watched } = await dropAndResume(transport, start);
      expect(watched.errors[0]?.code).toBe("shutting_down");
    },
    60_000,
  );

  it.each(["sse", "ws"] as const)(
    "over %s, after its node is killed (SIGKILL), comes back with one socket and resumes every subscription without losing a message",
    async (transport) => {
      const port = await freePort();
      const start = async () => {
        const edge = new EdgeProcess(port, { REDIS_URL: redis.url }, dataDir);
        await edge.ready();
        return { url: edge.url, down: () => edge.kill() };
      };
      const { watched } = await dropAndResume(transport, start);
      expect(watched.errors[0]?.code).toBe("network_error");
    },
    60_000,
  );
});
