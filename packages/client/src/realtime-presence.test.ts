import { describe, expect, it } from "vitest";
import { PlateClientError } from "./errors.js";
import { Presence } from "./realtime-presence.js";
import type { PresenceFrame, Tracks } from "./realtime-presence.js";

const at = "2026-12-01T00:00:00.000Z";
const member = (state: unknown, user?: string) =>
  user === undefined ? { state, joinedAt: at } : { user, state, joinedAt: at };
const state = (members: Record<string, ReturnType<typeof member>>): PresenceFrame => ({
  type: "presence",
  channel: "c",
  state: members,
});
const diff = (
  joins: Record<string, ReturnType<typeof member>>,
  leaves: Record<string, ReturnType<typeof member>> = {},
): PresenceFrame => ({
  type: "presence",
  channel: "c",
  joins,
  leaves,
});

/** A fake attempt: what was sent, by ref. */
function link() {
  const sent: { ref: number; tracks: Tracks }[] = [];
  let next = 1;
  const send = (tracks: Tracks) => {
    sent.push({ ref: next, tracks });
    return next++;
  };
  return { sent, send };
}

describe("a subscription's presence", () => {
  it("takes the whole state, then applies joins, updates and leaves, handing maps that never change afterwards", () => {
    const presence = new Presence(() => 0);
    expect(presence.apply(diff({ a: member(1) }))).toBeUndefined(); // before any state: not applied
    const first = presence.apply(state({ a: member(1, "ann") }));
    expect(first?.kind).toBe("state");
    const held = presence.members;
    const change = presence.apply(diff({ a: member(2, "ann"), b: member("x") }, { a: member(1, "ann") }));
    expect(change).toEqual({
      kind: "diff",
      members: new Map([
        ["a", member(2, "ann")],
        ["b", member("x")],
      ]),
      joined: new Map([
        ["a", member(2, "ann")],
        ["b", member("x")],
      ]),
      // An update did not leave; its old record is in `previous`.
      previous: new Map([["a", member(1, "ann")]]),
      left: new Map(),
    });
    expect(held).toEqual(new Map([["a", member(1, "ann")]]));
    const gone = presence.apply(diff({}, { b: member("x") }));
    expect(gone?.kind === "diff" && [...gone.left.keys()]).toEqual(["b"]);
    // A whole state again (after a gap) replaces everything.
    presence.apply(state({ z: member(0) }));
    expect([...presence.members.keys()]).toEqual(["z"]);
  });

  it("queues a track while not live, tracks the last state the service took again on the next attempt, and resends unanswered requests", async () => {
    const presence = new Presence(() => 0);
    const one = link();
    const queued = presence.request({ state: "a" });
    presence.resume(one.send);
    expect(one.sent.map((s) => s.tracks)).toEqual([{ state: "a" }]);
    presence.answer(1);
    await queued;
    // Sent, then the attempt dropped: sent again after the state the service had.
    const unanswered = presence.request({ state: "b" });
    presence.dropped();
    const two = link();
    presence.resume(two.send);
    expect(two.sent.map((s) => s.tracks)).toEqual([{ state: "a" }, { state: "b" }]);
    presence.answer(1);
    presence.answer(2);
    await unanswered;
    // A refused track rejects with its code and leaves the state the service kept.
    const refused = presence.request({ state: "too big" });
    presence.answer(3, new PlateClientError("payload_too_large", "too big"));
    await expect(refused).rejects.toMatchObject({ code: "payload_too_large" });
    presence.dropped();
    const three = link();
    presence.resume(three.send);
    expect(three.sent.map((s) => s.tracks)).toEqual([{ state: "b" }]);
  });

  it("untracks at once while not live, and rejects what waits when it closes", async () => {
    const presence = new Presence(() => 0);
    const one = link();
    presence.resume(one.send);
    const tracked = presence.request({ state: 1 });
    presence.answer(1);
    await tracked;
    presence.dropped();
    await presence.request(undefined);
    const two = link();
    presence.resume(two.send);
    expect(two.sent).toEqual([]);
    presence.dropped();
    const waiting = presence.request({ state: 2 });
    presence.close();
    await expect(waiting).rejects.toMatchObject({ code: "connection_closed" });
  });

  it("answers a refused track-again for the subscription's onError, and forgets the state unless it may be retried", () => {
    const presence = new Presence(() => 0);
    const one = link();
    presence.resume(one.send);
    void presence.request({ state: 1 });
    presence.answer(1);
    presence.dropped();
    const two = link();
    presence.resume(two.send);
    expect(presence.answer(1, new PlateClientError("quota_exceeded", "full"))?.code).toBe("quota_exceeded");
    presence.dropped();
    const three = link();
    presence.resume(three.send);
    expect(three.sent).toEqual([]);
  });
});
