import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, startRedis } from "@plate/testing";
import type { RedisServer } from "@plate/testing";
import { testSigner } from "./test-support/signing.js";
import type { TestSigner } from "./test-support/signing.js";
import { KEYS, eventually, startTestNode } from "./test-support/node.js";
import type { TestNode } from "./test-support/node.js";
import { EdgeProcess, redisNodeEnv } from "./test-support/process.js";
import { WsClient } from "./test-support/ws.js";

/**
 * Presence (route 10) as clients live it: several clients on two nodes sharing a real
 * redis-server, over real WebSockets; the REST route; the caps; a node SIGKILLed.
 */

let redis: RedisServer;
let a: TestNode;
let b: TestNode;
let signer: TestSigner;
const clients: { close(): void }[] = [];

beforeAll(async () => {
  redis = await startRedis();
  const env = { REDIS_URL: redis.url, PRESENCE_MAX_MEMBERS: "3", PRESENCE_MAX_STATE_BYTES: "64" };
  a = await startTestNode(env);
  b = await startTestNode(env);
  signer = await testSigner(a.url);
});
afterAll(async () => {
  for (const c of clients) c.close();
  await a?.cleanup();
  await b?.cleanup();
  await redis?.stop();
});

function token(sub: string, claims: Record<string, unknown> = { patterns: ["*"], presence: true }): Promise<string> {
  return signer.sign({ sub, ...claims });
}

type Client = WsClient & { clientId: string };

async function connect(node: { wsUrl?: string; url: string }, credential: string): Promise<Client> {
  const base = node.wsUrl ?? node.url.replace(/^http/, "ws");
  const client = await WsClient.connect(`${base}/acme/realtime`, { headers: { Authorization: `Bearer ${credential}` } });
  clients.push(client);
  const ready = await client.waitFor("ready");
  return Object.assign(client, { clientId: ready.clientId as string });
}

async function request(client: WsClient, frame: { ref: string | number } & Record<string, unknown>, timeoutMs = 5000): Promise<any> {
  client.socket.send(JSON.stringify(frame));
  expect(await eventually(() => client.frames.some((f) => f.ref === frame.ref && f.type !== "message"), timeoutMs)).toBe(true);
  return client.frames.find((f) => f.ref === frame.ref && f.type !== "message");
}

let refs = 0;
const ref = () => `r${++refs}`;

const presenceFrames = (client: WsClient, channel: string) => client.frames.filter((f) => f.type === "presence" && f.channel === channel);
/** A diff as `+id` / `-id` steps, in order. */
const steps = (client: WsClient, channel: string) =>
  presenceFrames(client, channel)
    .filter((f) => f.state === undefined)
    .flatMap((f) => [...Object.keys(f.leaves).map((id) => `-${id}`), ...Object.keys(f.joins).map((id) => `+${id}`)]);

describe("presence across two nodes", () => {
  it("gives a presence:true subscription the state once, then joins and leaves in the same order on every node; untrack, unsubscribe and disconnect all leave", async () => {
    const channel = "room.1";
    const ann = await connect(a, await token("ann"));
    const bob = await connect(b, await token("bob"));
    const quiet = await connect(a, await token("cy"));
    expect(await request(ann, { type: "subscribe", ref: ref(), channel, presence: true })).toMatchObject({ type: "subscribed" });
    expect(await eventually(() => presenceFrames(ann, channel).length === 1)).toBe(true);
    expect(presenceFrames(ann, channel)[0]).toEqual({ type: "presence", channel, state: {} });
    expect(await request(ann, { type: "presence.track", ref: ref(), channel, state: { status: "here" } })).toMatchObject({ type: "ok" });
    // A late joiner on the other node gets the whole state, then changes.
    expect(await request(bob, { type: "subscribe", ref: ref(), channel, presence: true })).toMatchObject({ type: "subscribed" });
    expect(await eventually(() => presenceFrames(bob, channel).length === 1)).toBe(true);
    const bobState = presenceFrames(bob, channel)[0].state;
    expect(bobState).toEqual({ [ann.clientId]: { user: "ann", state: { status: "here" }, joinedAt: expect.any(String) } });
    await request(bob, { type: "presence.track", ref: ref(), channel, state: 1 });
    await request(quiet, { type: "subscribe", ref: ref(), channel });
    await request(quiet, { type: "presence.track", ref: ref(), channel, state: null });
    await request(ann, { type: "presence.track", ref: ref(), channel, state: { status: "away" } });
    await request(bob, { type: "presence.untrack", ref: ref(), channel });
    await request(quiet, { type: "unsubscribe", ref: ref(), channel });
    quiet.close();
    await request(bob, { type: "presence.track", ref: ref(), channel, state: 2 });
    const expected = [
      `+${ann.clientId}`,
      `+${bob.clientId}`,
      `+${quiet.clientId}`,
      `-${ann.clientId}`,
      `+${ann.clientId}`,
      `-${bob.clientId}`,
      `-${quiet.clientId}`,
      `+${bob.clientId}`,
    ];
    expect(await eventually(() => steps(ann, channel).length === expected.length)).toBe(true);
    expect(steps(ann, channel)).toEqual(expected);
    // Bob's state already held ann's join: he sees everything after it, in the same order.
    expect(await eventually(() => steps(bob, channel).length === expected.length - 1)).toBe(true);
    expect(steps(bob, channel)).toEqual(expected.slice(1));
    // The update carries the new state; the user comes from the token's sub.
    const update = presenceFrames(ann, channel).find((f) => f.joins?.[ann.clientId]?.state?.status === "away");
    expect(update.leaves[ann.clientId].state).toEqual({ status: "here" });
    expect(update.joins[ann.clientId].joinedAt).toBe(update.leaves[ann.clientId].joinedAt);
    // A subscription without presence:true gets no presence frames.
    expect(presenceFrames(quiet, channel)).toEqual([]);

    // The REST route, from either node, agrees with what is connected.
    for (const node of [a, b]) {
      const res = await fetch(`${node.url}/acme/pubsub/${channel}/presence`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
      const body = (await res.json()) as { data: { members: { clientId: string; user?: string; state: unknown }[]; count: number } };
      expect(res.status).toBe(200);
      expect(body.data.count).toBe(2);
      expect(body.data.members.map((m) => [m.clientId, m.user, m.state]).sort()).toEqual(
        [
          [ann.clientId, "ann", { status: "away" }],
          [bob.clientId, "bob", 2],
        ].sort(),
      );
    }
    // The connection ends: it leaves, for everyone.
    bob.close();
    expect(await eventually(() => steps(ann, channel).at(-1) === `-${bob.clientId}`)).toBe(true);
  });

  it("enforces the caps and the credential with clear errors, keeping the connection", async () => {
    const channel = "room.caps";
    const members = await Promise.all(["m1", "m2", "m3", "m4"].map(async (sub) => connect(a, await token(sub))));
    for (const m of members) await request(m, { type: "subscribe", ref: ref(), channel });
    const answers = [];
    for (const m of members) answers.push(await request(m, { type: "presence.track", ref: ref(), channel, state: "x" }));
    expect(answers.map((f) => f.error?.code ?? f.type)).toEqual(["ok", "ok", "ok", "quota_exceeded"]);
    // An update of a member still passes; a state over the size does not.
    expect((await request(members[0]!, { type: "presence.track", ref: ref(), channel, state: "y" })).type).toBe("ok");
    expect((await request(members[0]!, { type: "presence.track", ref: ref(), channel, state: "z".repeat(100) })).error.code).toBe("payload_too_large");
    // Not subscribed; a token without the presence claim; a pattern asking for presence.
    expect((await request(members[0]!, { type: "presence.track", ref: ref(), channel: "elsewhere", state: 1 })).error.code).toBe("bad_request");
    const noClaim = await connect(a, await token("nc", { patterns: ["*"] }));
    await request(noClaim, { type: "subscribe", ref: ref(), channel });
    expect((await request(noClaim, { type: "presence.track", ref: ref(), channel, state: 1 })).error.code).toBe("forbidden");
    expect((await request(noClaim, { type: "subscribe", ref: ref(), pattern: "room.*", presence: true })).error.code).toBe("bad_request");
    for (const c of [...members, noClaim]) expect(c.closeCode).toBeUndefined();
    const res = await fetch(`${b.url}/acme/pubsub/${channel}/presence`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    expect(((await res.json()) as { data: { count: number } }).data.count).toBe(3);
  });
});

describe("occupancy (GET /{plateId}/channels)", () => {
  it("answers the channels with subscribers and their connection counts over both nodes, by prefix, and follows disconnects", async () => {
    const open = async (node: TestNode, query: string) => {
      const client = await WsClient.connect(`${node.wsUrl}/globex/realtime?${query}`, { headers: { Authorization: `Bearer ${KEYS.globex}` } });
      clients.push(client);
      await client.waitFor("ready");
      return client;
    };
    const one = await open(a, "channel=game.1&channel=game.2&channel=chat");
    await open(b, "channel=game.1");
    await open(b, "channel=game.1&pattern=game.*");
    const occupancy = async (node: TestNode, prefix?: string) => {
      const res = await fetch(`${node.url}/globex/channels${prefix === undefined ? "" : `?prefix=${prefix}`}`, { headers: { Authorization: `Bearer ${KEYS.globex}` } });
      expect(res.status).toBe(200);
      return ((await res.json()) as { data: { channel: string; connections: number }[] }).data;
    };
    for (const node of [a, b]) {
      expect(await occupancy(node, "game.")).toEqual([
        { channel: "game.1", connections: 3 },
        { channel: "game.2", connections: 1 },
      ]);
      expect((await occupancy(node)).map((o) => o.channel)).toEqual(["chat", "game.1", "game.2"]);
    }
    one.close();
    expect(await eventually(async () => (await occupancy(b)).length === 1)).toBe(true);
    expect(await occupancy(b)).toEqual([{ channel: "game.1", connections: 2 }]);
    const bad = await fetch(`${a.url}/globex/channels?prefix=${encodeURIComponent("a b")}`, { headers: { Authorization: `Bearer ${KEYS.globex}` } });
    expect(bad.status).toBe(400);
    const other = await fetch(`${a.url}/globex/channels`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    expect(other.status).toBe(401);
  });
});

describe("presence when a node dies", () => {
  const nodes: EdgeProcess[] = [];
  let redisOfTheirOwn: RedisServer;
  beforeAll(async () => {
    redisOfTheirOwn = await startRedis();
  });
  afterAll(async () => {
    for (const n of nodes) n.kill();
    await redisOfTheirOwn?.stop();
  });

  it("removes the members of a SIGKILLed node for everyone else within the lease (well under 30 s)", async () => {
    const env = { ...redisNodeEnv(redisOfTheirOwn.url), PRESENCE_LEASE_MS: "1500", PRESENCE_SWEEP_MS: "300" };
    for (let i = 0; i < 2; i++) {
      const node = new EdgeProcess(await freePort(), env);
      nodes.push(node);
      await node.ready();
    }
    const [doomed, survivor] = nodes as [EdgeProcess, EdgeProcess];
    const channel = "lobby";
    const watcher = await connect(survivor, KEYS.acme);
    await request(watcher, { type: "subscribe", ref: ref(), channel, presence: true });
    await request(watcher, { type: "presence.track", ref: ref(), channel, state: "watching" });
    const gone = await Promise.all([1, 2].map(() => connect(doomed, KEYS.acme)));
    for (const c of gone) {
      await request(c, { type: "subscribe", ref: ref(), channel });
      await request(c, { type: "presence.track", ref: ref(), channel, state: "soon gone" });
    }
    expect(await eventually(() => steps(watcher, channel).length === 3)).toBe(true);
    const killedAt = Date.now();
    doomed.kill();
    expect(await eventually(() => steps(watcher, channel).filter((s) => s.startsWith("-")).length === 2, 10_000)).toBe(true);
    expect(Date.now() - killedAt).toBeLessThan(5_000);
    expect(steps(watcher, channel).slice(3).sort()).toEqual(gone.map((c) => `-${c.clientId}`).sort());
    const res = await fetch(`${survivor.url}/acme/pubsub/${channel}/presence`, { headers: { Authorization: `Bearer ${KEYS.acme}` } });
    expect(((await res.json()) as { data: { members: { clientId: string }[] } }).data.members.map((m) => m.clientId)).toEqual([watcher.clientId]);
  });
});
