import { readFile } from "node:fs/promises";
import { EventSource } from "eventsource";
import { parsePosition } from "@plate/protocol";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KEYS, eventually, startTestNode } from "../test-support/node.js";
import type { TestNode } from "../test-support/node.js";

/**
 * The examples of the published docs (README, docs/API.md), run as a user would paste them: only
 * the base URL and the key differ. Browser APIs come from the `eventsource` package and from `ws`,
 * whose WebSocket has the browser's `onopen` / `onmessage` / `send`.
 */
describe("the documented examples work as written", () => {
  let t: TestNode;
  let base: string;
  let wsBase: string;
  const key = KEYS.acme;
  beforeAll(async () => {
    t = await startTestNode();
    base = t.url;
    wsBase = t.wsUrl;
  });
  afterAll(() => t.cleanup());

  /** The doc's publish example (a). */
  function publishHello(channel = "alerts", message: unknown = { text: "hello" }) {
    return fetch(base + "/acme/pubsub/" + channel + "/publish", {
      method: "POST",
      headers: { Authorization: "Bearer " + key, "Content-Type": "application/json" },
      body: JSON.stringify({ message }),
    });
  }

  it("publishes with fetch, a Bearer key and {message: ...}", async () => {
    const res = await publishHello();
    expect(res.status).toBe(200);
    const body = (await res.json()) as any;
    expect(body.data).toMatchObject({ channel: "alerts" });
    expect(typeof body.data.id).toBe("string");
    expect(typeof body.data.timestamp).toBe("string");
  });

  it("subscribes with EventSource and an Authorization header: onmessage sees messages only, ready comes as its own event", async () => {
    const readies: any[] = [];
    const messages: any[] = [];
    const es = new EventSource(base + "/acme/pubsub/alerts/subscribe", {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, Authorization: "Bearer " + key } }),
    });
    es.addEventListener("ready", (e) => readies.push(JSON.parse(e.data)));
    es.onmessage = (e) => messages.push(JSON.parse(e.data));
    try {
      expect(await eventually(() => readies.length === 1)).toBe(true);
      expect(readies[0]).toMatchObject({ type: "ready", channel: "alerts", pattern: false });
      const res = await publishHello();
      const { data } = (await res.json()) as any;
      expect(await eventually(() => messages.length >= 1)).toBe(true);
      await publishHello("alerts", { text: "again" });
      expect(await eventually(() => messages.length >= 2)).toBe(true);
      expect(messages[0]).toEqual({
        type: "message",
        id: data.id,
        channel: "alerts",
        message: { text: "hello" },
        timestamp: data.timestamp,
      });
      expect(messages.map((m) => m.type)).toEqual(["message", "message"]);
      expect(messages[1].message).toEqual({ text: "again" });
      expect(readies).toHaveLength(1);
      expect(es.readyState).toBe(EventSource.OPEN);
    } finally {
      es.close();
    }
  });

  it("subscribes with a WebSocket that sends {auth: key} first: ready, then the message", async () => {
    const frames: any[] = [];
    const ws = new WebSocket(wsBase + "/acme/pubsub/alerts/ws");
    ws.onopen = () => ws.send(JSON.stringify({ auth: key }));
    ws.onmessage = (e) => frames.push(JSON.parse(e.data as string));
    try {
      expect(await eventually(() => frames.length >= 1)).toBe(true);
      expect(frames[0]).toMatchObject({ type: "ready", channel: "alerts", pattern: false });
      await publishHello();
      expect(await eventually(() => frames.length >= 2)).toBe(true);
      expect(frames[1]).toMatchObject({ type: "message", channel: "alerts", message: { text: "hello" } });
    } finally {
      ws.terminate();
    }
  });

  it("lets a backend mint a socket path (POST with a JSON body) that a plain EventSource with no headers uses", async () => {
    // The backend's call (the README's curl, as fetch).
    const minted = await fetch(base + "/acme/pubsub/alerts/client", {
      method: "POST",
      headers: { Authorization: "Bearer " + key, "Content-Type": "application/json" },
      body: JSON.stringify({ max_uses: 1 }),
    });
    expect(minted.status).toBe(200);
    const { path } = ((await minted.json()) as any).data;
    expect(path).toMatch(/^\/acme\/s\//);

    // The page's code: no key, no headers.
    const received: unknown[] = [];
    const events = new EventSource(base + path);
    events.onmessage = (e) => received.push(JSON.parse(e.data).message);
    let ready = false;
    events.addEventListener("ready", () => (ready = true));
    try {
      expect(await eventually(() => ready)).toBe(true);
      await publishHello();
      expect(await eventually(() => received.length >= 1)).toBe(true);
      expect(received).toEqual([{ text: "hello" }]);
    } finally {
      events.close();
    }
  });

  it("lets a backend mint a socket path (GET with a query) that a WebSocket with no key uses", async () => {
    const minted = await fetch(base + "/acme/pubsub/alerts/client?max_uses=1", {
      headers: { Authorization: "Bearer " + key },
    });
    expect(minted.status).toBe(200);
    const { path } = ((await minted.json()) as any).data;

    const frames: any[] = [];
    const ws = new WebSocket(wsBase + path);
    ws.onmessage = (e) => frames.push(JSON.parse(e.data as string));
    try {
      expect(await eventually(() => frames.length >= 1)).toBe(true);
      expect(frames[0]).toMatchObject({ type: "ready", channel: "alerts", pattern: false });
      await publishHello();
      expect(await eventually(() => frames.length >= 2)).toBe(true);
      expect(frames[1]).toMatchObject({ type: "message", channel: "alerts", message: { text: "hello" } });
    } finally {
      ws.terminate();
    }
  });

  it("lets the page use the POST-minted path over WebSocket and the GET-minted path over EventSource too", async () => {
    const post = await fetch(base + "/acme/pubsub/alerts/client", {
      method: "POST",
      headers: { Authorization: "Bearer " + key, "Content-Type": "application/json" },
      body: JSON.stringify({ max_uses: 1 }),
    });
    const get = await fetch(base + "/acme/pubsub/alerts/client?max_uses=1", {
      headers: { Authorization: "Bearer " + key },
    });
    const wsPath = ((await post.json()) as any).data.path;
    const ssePath = ((await get.json()) as any).data.path;

    const frames: any[] = [];
    const ws = new WebSocket("ws://" + new URL(base).host + wsPath);
    ws.onmessage = (e) => frames.push(JSON.parse(e.data as string));
    const received: unknown[] = [];
    let ready = false;
    const events = new EventSource(base + ssePath);
    events.onmessage = (e) => received.push(JSON.parse(e.data).message);
    events.addEventListener("ready", () => (ready = true));
    try {
      expect(await eventually(() => ready && frames.length >= 1)).toBe(true);
      await publishHello();
      expect(await eventually(() => received.length >= 1 && frames.length >= 2)).toBe(true);
      expect(received).toEqual([{ text: "hello" }]);
      expect(frames[1].message).toEqual({ text: "hello" });
    } finally {
      ws.terminate();
      events.close();
    }
  });

  it("streams what the README's quickstart shows: the same lines, fields and id format", async () => {
    const readme = await readFile(new URL("../../../../README.md", import.meta.url), "utf8");
    const shown = /Terminal 1 shows:\n\n```\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(shown).toBeDefined();
    const res = await fetch(base + "/acme/pubsub/quickstart/subscribe", { headers: { Authorization: "Bearer " + key } });
    const reader = res.body!.getReader();
    let text = "";
    const decoder = new TextDecoder();
    try {
      while (!text.includes("event: ready")) text += decoder.decode((await reader.read()).value);
      await publishHello("quickstart");
      while (!/\ndata: \{"type":"message"[^\n]*\n\n/.test(text)) text += decoder.decode((await reader.read()).value);
    } finally {
      await reader.cancel();
    }
    expect(streamShape(text)).toEqual(streamShape(shown!));
  });
});

/**
 * What a user compares between a documented SSE stream and a live one: each line's field, the
 * format of ids (positions), the members of each JSON event. Values that differ per run do not count.
 */
function streamShape(stream: string): string[] {
  return stream
    .replace(/\n+$/, "")
    .split("\n")
    .map((line) => {
      const colon = line.indexOf(": ");
      if (colon < 0) return line;
      const [field, value] = [line.slice(0, colon), line.slice(colon + 2)];
      if (field === "id") return parsePosition(value) === undefined ? `id: not a position (${value})` : "id: <position>";
      if (field === "retry") return /^\d+$/.test(value) ? "retry: <ms>" : line;
      if (field === "data") {
        const data = JSON.parse(value) as { type?: string; position?: string };
        const position = data.position === undefined ? "" : ` position ${parsePosition(data.position) === undefined ? "bad" : "ok"}`;
        return `data: ${data.type} {${Object.keys(data).sort().join(",")}}${position}`;
      }
      return line;
    });
}
