import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "@plate/testing";
import { PlateClient, realtimeWithToken } from "@plate/client";
import type { PlateClientError, PresenceMembers, RealtimeConnection, RealtimeSubscribeOptions } from "@plate/client";

import { QUICK_RECONNECT, Watched } from "./realtime-support.js";
import { KEYS, startNode } from "./support.js";
import type { Node } from "./support.js";
import { createSigningKey, mintToken } from "./tokens.js";
import type { SigningKey, UserClaims } from "./tokens.js";

/**
 * Presence (route 10) through @plate/client against a real edge node over real WebSockets: two
 * users see each other join, change their state and leave; a late joiner gets the members; a
 * connection whose socket dies comes back and is a member again with the state it had; refusals
 * carry the spec's codes and keep the connection; and `PlateClient.presence` / `channels` (the
 * REST routes) agree with what is connected.
 */

const ADMIN_TOKEN = "admin-token-for-presence-tests-0123";

let node: Node;
let key: SigningKey;
let plate: PlateClient;
let channels = 0;
const channel = (what: string) => `presence-${++channels}-${what}`;

const open: RealtimeConnection[] = [];
afterEach(() => {
  for (const rt of open.splice(0)) rt.close();
});

beforeAll(async () => {
  node = await startNode({ ADMIN_TOKEN });
  key = await createSigningKey(node.url, "acme", ADMIN_TOKEN);
  plate = new PlateClient({ url: node.url, plate: "acme", key: KEYS.acme });
});
afterAll(async () => {
  await node?.stop();
});

/** A WebSocket connection of one user (a signed token with the claims given), watched. */
function connect(claims: UserClaims, watched = new Watched(), transport: "ws" | "sse" = "ws"): RealtimeConnection {
  const rt = realtimeWithToken({
    ...watched.options(transport),
    url: node.url,
    plate: "acme",
    tokenProvider: () => mintToken(key, claims, 60),
    WebSocket: watched.WebSocket,
    fetch: watched.fetch,
  });
  open.push(rt);
  return rt;
}

const user = (sub: string, presence = true): UserClaims => ({ sub, patterns: ["presence-*"], presence });

/** What one `presence: true` subscription was told: whole states, and each change as `+id`, `~id` (an update), `-id`. */
class Roster {
  readonly states: PresenceMembers[] = [];
  readonly steps: string[] = [];
  /** The old record of each update, in order. */
  readonly previous: PresenceMembers[] = [];
  readonly errors: PlateClientError[] = [];
  readonly options: RealtimeSubscribeOptions = {
    presence: true,
    onPresence: (members) => void this.states.push(members),
    onLeave: (left) => void this.steps.push(...[...left.keys()].map((id) => `-${id}`)),
    onJoin: (joined, previous) => {
      this.steps.push(...[...joined.keys()].map((id) => (previous.has(id) ? `~${id}` : `+${id}`)));
      if (previous.size > 0) this.previous.push(previous);
    },
    onError: (error) => void this.errors.push(error),
  };
}

const ignore = (): void => undefined;
const plain = (members: PresenceMembers) => Object.fromEntries(members);

describe("presence with @plate/client over a WebSocket", () => {
  it("two users see each other join, update and leave, and one who comes late gets everyone present", async () => {
    const ch = channel("room");
    const ann = connect(user("ann"));
    const annRoster = new Roster();
    const annRoom = ann.subscribe(ch, ignore, annRoster.options);
    expect(await eventually(() => annRoster.states.length === 1)).toBe(true);
    expect(annRoom.members.size).toBe(0);
    await annRoom.track({ status: "here" });
    const annId = ann.clientId!;
    expect(await eventually(() => annRoster.steps.length === 1)).toBe(true);

    // A late joiner's first state holds ann, with her token's user.
    const bob = connect(user("bob"));
    const bobRoster = new Roster();
    const bobRoom = bob.subscribe(ch, ignore, bobRoster.options);
    expect(await eventually(() => bobRoster.states.length === 1)).toBe(true);
    expect(plain(bobRoster.states[0]!)).toEqual({
      [annId]: { user: "ann", state: { status: "here" }, joinedAt: expect.any(String) },
    });
    const bobId = bob.clientId!;

    await bobRoom.track(1);
    await annRoom.track({ status: "away" });
    await bobRoom.untrack();
    await bobRoom.track(2);
    const seenByBob = [`~${annId}`, `-${bobId}`, `+${bobId}`];
    expect(await eventually(() => bobRoster.steps.length === 4)).toBe(true);
    expect(bobRoster.steps).toEqual([`+${bobId}`, ...seenByBob]);
    expect(plain(bobRoom.members)).toEqual({
      [annId]: { user: "ann", state: { status: "away" }, joinedAt: expect.any(String) },
      [bobId]: { user: "bob", state: 2, joinedAt: expect.any(String) },
    });
    // An update keeps `joinedAt`, and its old record comes as `previous`.
    expect(plain(bobRoster.previous[0]!)[annId]?.state).toEqual({ status: "here" });
    expect(bobRoom.members.get(annId)?.joinedAt).toBe(bobRoster.previous[0]!.get(annId)?.joinedAt);

    // Bob's connection ends: he leaves, for ann.
    bob.close();
    const seenByAnn = [`+${annId}`, `+${bobId}`, ...seenByBob, `-${bobId}`];
    expect(await eventually(() => annRoster.steps.length === seenByAnn.length)).toBe(true);
    expect(annRoster.steps).toEqual(seenByAnn);
    expect([...annRoom.members.keys()]).toEqual([annId]);
    expect([annRoster.states.length, annRoster.errors, ann.state]).toEqual([1, [], "open"]);
  });

  it("after its socket dies, reconnects, watches again and tracks its last state again: it sees itself present, the others see it leave and come back", async () => {
    const ch = channel("reconnect");
    const annWatched = new Watched();
    const ann = connect(user("ann"), annWatched);
    const annRoster = new Roster();
    const annRoom = ann.subscribe(ch, ignore, annRoster.options);
    await annRoom.track({ status: "here" });
    const before = ann.clientId!;
    const bob = connect(user("bob"));
    const bobRoster = new Roster();
    const bobRoom = bob.subscribe(ch, ignore, bobRoster.options);
    expect(await eventually(() => bobRoster.states.length === 1)).toBe(true);
    expect([...bobRoom.members.keys()]).toEqual([before]);

    // The socket ends with no close frame, as a network drop does.
    annWatched.sockets.at(-1)!.terminate();
    expect(await eventually(() => annWatched.readies.length === 2)).toBe(true);
    const after = ann.clientId!;
    expect(after).not.toBe(before);

    // A whole state again on the new connection, and ann present in it with the state she had.
    const status = (members: PresenceMembers, id: string) =>
      (members.get(id)?.state as { status?: string } | undefined)?.status;
    expect(await eventually(() => status(annRoom.members, after) === "here" && !annRoom.members.has(before))).toBe(
      true,
    );
    expect(annRoster.states.length).toBe(2);
    expect(annWatched.states).toEqual(["connecting", "open", "reconnecting", "open"]);
    expect(annWatched.errors.map((e) => e.code)).toEqual(["network_error"]);
    expect(await eventually(() => status(bobRoom.members, after) === "here")).toBe(true);
    // Bob's first state held ann: he saw her old connection leave and the new one join (in either order).
    expect([...bobRoster.steps].sort()).toEqual([`+${after}`, `-${before}`]);
    expect(bobRoom.members.has(before)).toBe(false);

    // A track asked while the socket is down (sent on it, or not) is done on the next one.
    annWatched.sockets.at(-1)!.terminate();
    const back = annRoom.track({ status: "back" });
    expect(await eventually(() => annWatched.readies.length === 3)).toBe(true);
    await back;
    const third = ann.clientId!;
    expect(await eventually(() => status(annRoom.members, third) === "back" && annRoom.members.size === 1)).toBe(true);
    expect(await eventually(() => status(bobRoom.members, third) === "back" && bobRoom.members.size === 1)).toBe(true);

    // The REST route agrees.
    const listed = await plate.presence(ch);
    expect(listed.count).toBe(1);
    expect(listed.members).toEqual([
      { clientId: third, user: "ann", state: { status: "back" }, joinedAt: expect.any(String) },
    ]);

    // Untracked, it is not tracked again after the next drop.
    await annRoom.untrack();
    annWatched.sockets.at(-1)!.terminate();
    expect(await eventually(() => annWatched.readies.length === 4 && annRoster.states.length === 4)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(annRoom.members.size).toBe(0);
    expect((await plate.presence(ch)).count).toBe(0);
  });

  it("refuses with the spec's codes and keeps the connection: no presence claim, a state too large, not JSON, a pattern, SSE", async () => {
    const ch = channel("refusals");
    const rt = connect(user("cy", false));
    const room = rt.subscribe(ch, ignore);
    await expect(room.track("hi")).rejects.toMatchObject({ code: "forbidden" });
    const allowed = connect(user("dee"));
    const other = allowed.subscribe(ch, ignore);
    // Over the service's PRESENCE_MAX_STATE_BYTES (4,096): refused by the service.
    await expect(other.track("x".repeat(5_000))).rejects.toMatchObject({ code: "payload_too_large" });
    // Over the largest frame the service takes: refused unsent (the service would close the socket).
    await expect(other.track("x".repeat(20_000))).rejects.toMatchObject({ code: "payload_too_large" });
    await expect(other.track(undefined)).rejects.toMatchObject({ code: "bad_request" });
    await other.track("ok");
    expect(() => allowed.subscribe({ pattern: "presence-*" }, ignore, { presence: true })).toThrow(
      expect.objectContaining({ code: "bad_request" }),
    );
    const pattern = allowed.subscribe({ pattern: "presence-x*" }, ignore);
    await expect(pattern.track(1)).rejects.toMatchObject({ code: "bad_request" });
    expect([rt.state, allowed.state]).toEqual(["open", "open"]);

    const sse = connect(user("eve"), new Watched(), "sse");
    expect(() => sse.subscribe(channel("sse"), ignore, { presence: true })).toThrow(
      expect.objectContaining({ code: "bad_request" }),
    );
    await expect(sse.subscribe(channel("sse"), ignore).track(1)).rejects.toMatchObject({ code: "bad_request" });

    // Unsubscribing leaves; a track that waits on it rejects with connection_closed.
    expect((await plate.presence(ch)).count).toBe(1);
    other.unsubscribe();
    expect(await eventually(async () => (await plate.presence(ch)).count === 0)).toBe(true);
    await expect(other.track(1)).rejects.toMatchObject({ code: "connection_closed" });
  });
});

describe("PlateClient.presence and PlateClient.channels (the REST routes)", () => {
  it("list a channel's members and the channels with subscribers, counting connections over a key's realtime connections", async () => {
    const prefix = channel("occupancy");
    const [a, b] = [`${prefix}.a`, `${prefix}.b`];
    const watched = new Watched();
    const keyed = watched.client(node.url);
    const one = keyed.realtime({ transport: "ws", reconnect: QUICK_RECONNECT });
    const two = keyed.realtime({ transport: "ws", reconnect: QUICK_RECONNECT });
    open.push(one, two);
    const roster = new Roster();
    const watching = one.subscribe(a, ignore, roster.options);
    one.subscribe(b, ignore);
    const tracked = two.subscribe(a, ignore);
    await tracked.track({ cursor: [1, 2] });
    expect(await eventually(() => watching.members.size === 1)).toBe(true);

    const listed = await plate.presence(a);
    // A key's connection has no user.
    expect(listed).toEqual({
      members: [{ clientId: two.clientId, state: { cursor: [1, 2] }, joinedAt: expect.any(String) }],
      count: 1,
    });
    expect(plain(watching.members)).toEqual({
      [two.clientId!]: { state: { cursor: [1, 2] }, joinedAt: listed.members[0]!.joinedAt },
    });
    expect(await plate.presence(b)).toEqual({ members: [], count: 0 });

    expect(await plate.channels({ prefix })).toEqual({
      channels: [
        { channel: a, connections: 2 },
        { channel: b, connections: 1 },
      ],
      truncated: false,
    });
    expect((await plate.channels()).channels).toEqual(expect.arrayContaining([{ channel: b, connections: 1 }]));
    two.close();
    expect(
      await eventually(
        async () => (await plate.channels({ prefix })).channels.length === 2 && (await plate.presence(a)).count === 0,
      ),
    ).toBe(true);
    expect((await plate.channels({ prefix })).channels).toEqual([
      { channel: a, connections: 1 },
      { channel: b, connections: 1 },
    ]);
    await expect(plate.channels({ prefix: "not a name" })).rejects.toMatchObject({ code: "invalid_parameter" });
    await expect(
      new PlateClient({ url: node.url, plate: "acme", key: "a-wrong-key-0123456789abcdefgh" }).presence(a),
    ).rejects.toMatchObject({
      code: "invalid_api_key",
    });
  });
});
