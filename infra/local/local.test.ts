import { connect } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { SseClient, freePort } from "@plate/testing";
import { INFRA, down, sh, up } from "./topology.js";

/**
 * The deployment's topology as infra/local brings it up from Debian's packages (redis-server,
 * three edges, nginx, Prometheus), used the way clients and operators use it: through the load
 * balancer. The shipped nginx, Prometheus and Grafana files are the ones under test.
 */
const ADMIN_TOKEN = "local-admin-token-0123456789abcd";
const KEY = "local-secret-0123456789abcdefghij";
const AUTH = { Authorization: `Bearer ${KEY}` };

/** Writes `request` as is on a new connection to `url` and answers what came back before the close. */
function rawRequest(url: string, request: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname, () => socket.write(request));
    let answer = "";
    socket.setEncoding("latin1").on("data", (chunk: string) => (answer += chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(answer));
    setTimeout(() => socket.destroy(), 5000).unref();
  });
}

async function eventually(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("infra/local: the topology on loopback", () => {
  let dir: string;
  let lb: string;
  let edges: string[];
  let prometheus: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "plate-local-"));
    const ports = { lb: await freePort(), edges: [await freePort(), await freePort(), await freePort()], redis: await freePort(), prom: await freePort() };
    lb = `http://127.0.0.1:${ports.lb}`;
    edges = ports.edges.map((p) => `http://127.0.0.1:${p}`);
    prometheus = `http://127.0.0.1:${ports.prom}`;
    env = {
      PLATE_LOCAL_DIR: dir,
      LB_PORT: String(ports.lb),
      EDGE_PORTS: ports.edges.join(" "),
      REDIS_PORT: String(ports.redis),
      PROMETHEUS_PORT: String(ports.prom),
      SCRAPE_INTERVAL: "1s",
      ADMIN_TOKEN,
      BOOTSTRAP_PLATES: JSON.stringify({ local: KEY }),
    };
    await up(env);
  });

  afterAll(async () => {
    await down(env);
    await rm(dir, { recursive: true, force: true });
  });

  it("passes SSE and WebSocket subscriptions through nginx, and a publish through it reaches subscribers on all three nodes", async () => {
    const open = async (base: string) => {
      const client = await SseClient.open(`${base}/local/pubsub/room/subscribe`, AUTH);
      await client.waitFor("ready", 5000);
      return client;
    };
    const direct = await Promise.all(edges.map(open));
    const proxied = await open(lb);
    const ws = new WebSocket(`${lb.replace("http", "ws")}/local/pubsub/room/ws`, { headers: AUTH });
    const frames: { type: string; message?: unknown }[] = [];
    ws.on("message", (data: Buffer) => frames.push(JSON.parse(data.toString("utf8")) as { type: string }));
    expect(await eventually(() => Promise.resolve(frames.some((f) => f.type === "ready")), 5000)).toBe(true);
    try {
      const res = await fetch(`${lb}/local/pubsub/room/publish`, {
        method: "POST",
        headers: { ...AUTH, "Content-Type": "application/json" },
        body: JSON.stringify({ message: { via: "nginx" } }),
      });
      expect(res.status).toBe(200);
      const everyone = () => Promise.resolve([...direct, proxied].every((s) => s.messages.length === 1) && frames.some((f) => f.type === "message"));
      expect(await eventually(everyone, 5000)).toBe(true);
      for (const s of [...direct, proxied]) expect(s.messages[0]).toMatchObject({ type: "message", channel: "room", message: { via: "nginx" } });
      expect(frames.find((f) => f.type === "message")).toMatchObject({ message: { via: "nginx" } });
    } finally {
      for (const s of [...direct, proxied]) s.close();
      ws.terminate();
    }
  });

  it("answers upgrade requests whose target is no URL with 400 through nginx, and every edge stays up", async () => {
    // One such request once ended an edge, and nginx (proxy_next_upstream error) retried it on each.
    // nginx passes `//a:99999/` on as it is (the edge answers 400 bad_request) and reads the
    // absolute form itself (the edge gets `/`: 404); never a 502 for edges that died.
    for (const target of ["//a:99999/", "http://a:99999/"]) {
      const answer = await rawRequest(lb, `GET ${target} HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n`);
      expect(answer).toMatch(/^HTTP\/1\.1 40[04] /);
    }
    for (const edge of edges) expect((await fetch(`${edge}/healthz`)).status).toBe(200);
  });

  it("has Prometheus scraping every edge (every target up)", async () => {
    const allUp = async () => {
      const body = (await (await fetch(`${prometheus}/api/v1/targets`)).json()) as { data: { activeTargets: { health: string; scrapePool: string }[] } };
      const targets = body.data.activeTargets.filter((t) => t.scrapePool === "plate-edge");
      return targets.length === 3 && targets.every((t) => t.health === "up");
    };
    expect(await eventually(allUp, 20_000)).toBe(true);
  });

  it("ships a Prometheus configuration and alert rules that promtool accepts", async () => {
    const config = await sh("promtool", ["check", "config", join(INFRA, "prometheus/prometheus.yml")]);
    expect(config.code, config.out).toBe(0);
    const composeConfig = await sh("promtool", ["check", "config", "--syntax-only", join(INFRA, "prometheus/prometheus.compose.yml")]);
    expect(composeConfig.code, composeConfig.out).toBe(0);
    const rules = await sh("promtool", ["check", "rules", join(INFRA, "prometheus/alerts.yml")]);
    expect(rules.code, rules.out).toBe(0);
  });

  it("names in every dashboard and alert query only metrics an edge really exports", async () => {
    const exported = await (await fetch(`${edges[0]}/metrics`)).text();
    const names = new Set<string>();
    for (const match of exported.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
      const [, name, type] = match;
      names.add(name!);
      if (type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(name! + suffix);
    }
    const dashboard = await readFile(join(INFRA, "grafana/dashboards/plate.json"), "utf8");
    const alerts = await readFile(join(INFRA, "prometheus/alerts.yml"), "utf8");
    const queries = [...JSON.stringify(JSON.parse(dashboard)).matchAll(/"(?:expr|query|definition)":"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!);
    queries.push(...[...alerts.matchAll(/^\s*expr:\s*(.+)$/gm)].map((m) => m[1]!));
    expect(queries.length).toBeGreaterThan(10);
    const used = new Set(queries.flatMap((q) => [...q.matchAll(/\bplate_[a-z0-9_]+/g)].map((m) => m[0])));
    expect(used.size).toBeGreaterThan(5);
    const unknown = [...used].filter((name) => !names.has(name));
    expect(unknown).toEqual([]);
  });

  // Last in this file: it spends the loopback address' request burst.
  it("refuses one address past its open connections, and past its request burst, with 429 rate_limited (plate-limits.conf)", async () => {
    const open: Response[] = [];
    try {
      // Paced under the request rate (50/s), so only the connection limit (256) can refuse.
      for (let i = 0; i < 256; i++) {
        const res = await fetch(`${lb}/local/pubsub/limits/subscribe`, { headers: AUTH });
        expect(res.status).toBe(200);
        open.push(res);
        await new Promise((r) => setTimeout(r, 25));
      }
      const refused = await fetch(`${lb}/local/pubsub/limits/subscribe`, { headers: AUTH });
      expect(refused.status).toBe(429);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
    } finally {
      await Promise.all(open.map(async (res) => res.body?.cancel()));
    }
    // The streams are closed: after the burst has refilled (100 at 50/s), a burst of 150 at once
    // gets about 100 answers and 429s for the rest.
    await new Promise((r) => setTimeout(r, 2500));
    const statuses = await Promise.all(Array.from({ length: 150 }, async () => (await fetch(`${lb}/healthz`)).status));
    const refusedCount = statuses.filter((status) => status === 429).length;
    expect(statuses.filter((status) => status === 200).length).toBeGreaterThanOrEqual(100);
    expect(refusedCount).toBeGreaterThan(0);
    expect(refusedCount + statuses.filter((status) => status === 200).length).toBe(150);
  });
});
