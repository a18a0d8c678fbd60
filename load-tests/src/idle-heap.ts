/**
 * What an idle subscriber holds in a Plate node's V8 heap, by kind of object: a heap snapshot of
 * the node before and after it takes `--connections` idle subscriptions (W4's, over 100 channels),
 * then the difference per connection, grouped by constructor (`object:Socket`), by V8's own kinds
 * (`(object properties)`, `(code)`, `(string)`), and by closure name.
 *
 *   node load-tests/dist/idle-heap.js [--transport sse|ws] [--connections 2000] [--redis] [--top 30]
 *
 * A heap snapshot collects garbage first, so this is what the connections keep alive, to the byte
 * and the same on every run (W4's RSS adds the young generation, garbage not yet collected, native
 * memory and noise). Use it to find what to take off; W4 (`bench.js --workloads w4`) says what it
 * is worth. `(code)` is compiled code made during the burst, shared by every connection: it does
 * not grow with them. Snapshots are kept in the directory printed, for `owners` below.
 *
 * `--owners NAME` also prints which objects hold the nodes named NAME (an object's name, or
 * `(object properties)` for the property stores of objects in dictionary mode) and by which edge:
 * that is how the 825 bytes of every SSE stream's listener table were found (2026-12-03).
 */
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startRedis } from "@plate/testing";
import { startPlate } from "./servers.js";
import { RunStats } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import type { Transport } from "./subscriber.js";
import { plateTarget } from "./targets.js";
import { OPEN_CONCURRENCY, inBatches, sourceAddress } from "./workload.js";

const PLATE = "bench";
const KEY = "bench-secret-0123456789abcdefghij";
/** How long the node may settle after the connections opened, before the second snapshot, in ms. */
const SETTLE_MS = 2000;
/** How long a snapshot may take to be written, in ms. */
const SNAPSHOT_TIMEOUT_MS = 120_000;

const { values } = parseArgs({
  options: {
    transport: { type: "string", default: "sse" },
    connections: { type: "string", default: "2000" },
    redis: { type: "boolean", default: false },
    top: { type: "string", default: "30" },
    owners: { type: "string" },
  },
});
const transport: Transport = values.transport === "ws" ? "ws" : "sse";
const count = Number(values.connections);

const dir = mkdtempSync(join(tmpdir(), "plate-idle-heap-"));
const redis = values.redis ? await startRedis() : undefined;
const plate = await startPlate({
  cpu: undefined,
  redisUrl: redis?.url,
  plate: PLATE,
  key: KEY,
  nodeArgs: ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${dir}`],
});
const target = plateTarget({ name: "plate", port: plate.port, plate: PLATE, key: KEY, pids: [plate.pid] });
const stats = new RunStats();
stats.begin(0, performance.now());
const subscribers: Subscriber[] = [];
try {
  await sleep(SETTLE_MS);
  const before = read(await snapshot());
  // W4's idle subscriptions (idle.ts), opened as it opens them.
  subscribers.push(
    ...(await inBatches(count, OPEN_CONCURRENCY, (i) =>
      Subscriber.open(target, transport, `idle.${i % 100}`, { tracker: stats.tracker(false), eager: false, localAddress: sourceAddress() }),
    )),
  );
  await sleep(SETTLE_MS);
  const after = read(await snapshot());
  const [a, b] = [summarize(before), summarize(after)];
  const rows = [...b].map(([kind, { count: n, bytes }]) => {
    const was = a.get(kind) ?? { count: 0, bytes: 0 };
    return { kind, count: (n - was.count) / count, bytes: (bytes - was.bytes) / count };
  });
  rows.sort((x, y) => y.bytes - x.bytes);
  const total = rows.reduce((sum, r) => sum + r.bytes, 0);
  console.log(`${values.redis ? "redis" : "embedded"} ${transport}: ${Math.round(total)} bytes kept per idle connection (${count}); snapshots in ${dir}`);
  console.log("bytes/conn  objects/conn  kind");
  for (const r of rows.slice(0, Number(values.top))) console.log(`${r.bytes.toFixed(0).padStart(10)}  ${r.count.toFixed(2).padStart(12)}  ${r.kind}`);
  if (values.owners !== undefined) {
    console.log(`\nwhat holds "${values.owners}" (after), count and edge:`);
    for (const [edge, n] of owners(after, values.owners)) console.log(`${String(n).padStart(10)}  ${edge}`);
  }
} finally {
  for (const subscriber of subscribers) subscriber.close();
  await plate.stop();
  await redis?.stop();
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Asks the node for a heap snapshot (SIGUSR2) and answers its file once written. */
async function snapshot(): Promise<string> {
  const seen = new Set(readdirSync(dir));
  process.kill(plate.pid, "SIGUSR2");
  const deadline = Date.now() + SNAPSHOT_TIMEOUT_MS;
  for (;;) {
    const file = readdirSync(dir).find((f) => f.endsWith(".heapsnapshot") && !seen.has(f));
    // Written once the node answers again (it writes the snapshot on its main thread).
    if (file !== undefined && (await fetch(`http://127.0.0.1:${plate.port}/readyz`).then((r) => r.ok, () => false))) return join(dir, file);
    if (Date.now() > deadline) throw new Error("no heap snapshot");
    await sleep(200);
  }
}

interface Snapshot {
  readonly snapshot: { readonly meta: { readonly node_fields: string[]; readonly node_types: [string[]]; readonly edge_fields: string[]; readonly edge_types: [string[]] } };
  readonly nodes: number[];
  readonly edges: number[];
  readonly strings: string[];
}

function read(file: string): Snapshot {
  return JSON.parse(readFileSync(file, "utf8")) as Snapshot;
}

/** The kind a node is counted under: its constructor, or V8's kind for what has none. */
function kindOf(type: string, name: string): string {
  if (type === "string" || type === "concatenated string" || type === "sliced string") return "(string)";
  if (type === "code") return "(code)";
  if (type === "object") return `object:${name.slice(0, 50)}`;
  return `(${type}) ${name.slice(0, 40)}`;
}

/** Nodes and self bytes by kind. */
function summarize(s: Snapshot): Map<string, { count: number; bytes: number }> {
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const [typeAt, nameAt, sizeAt] = [fields.indexOf("type"), fields.indexOf("name"), fields.indexOf("self_size")];
  const kinds = new Map<string, { count: number; bytes: number }>();
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    const kind = kindOf(types[s.nodes[i + typeAt]!]!, s.strings[s.nodes[i + nameAt]!]!);
    const entry = kinds.get(kind) ?? { count: 0, bytes: 0 };
    entry.count += 1;
    entry.bytes += s.nodes[i + sizeAt]!;
    kinds.set(kind, entry);
  }
  return kinds;
}

/** Which nodes hold nodes named `name`, by the holder's name and the edge's, most frequent first. */
function owners(s: Snapshot, name: string): [string, number][] {
  const { node_fields: fields, edge_fields: edgeFields, edge_types: [edgeTypes] } = s.snapshot.meta;
  const [nameAt, sizeAt, edgeCountAt] = [fields.indexOf("name"), fields.indexOf("self_size"), fields.indexOf("edge_count")];
  const [edgeTypeAt, edgeNameAt, toAt] = [edgeFields.indexOf("type"), edgeFields.indexOf("name_or_index"), edgeFields.indexOf("to_node")];
  const tally = new Map<string, number>();
  let e = 0;
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    for (let k = 0; k < s.nodes[i + edgeCountAt]!; k++, e += edgeFields.length) {
      const to = s.edges[e + toAt]!;
      if (s.strings[s.nodes[to + nameAt]!] !== name) continue;
      const edgeType = edgeTypes[s.edges[e + edgeTypeAt]!]!;
      const edgeName = edgeType === "element" || edgeType === "hidden" ? String(s.edges[e + edgeNameAt]) : s.strings[s.edges[e + edgeNameAt]!];
      const key = `${s.strings[s.nodes[i + nameAt]!]!.slice(0, 50)} .${edgeName} (${s.nodes[to + sizeAt]} bytes)`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
    }
  }
  return [...tally].sort((x, y) => y[1] - x[1]).slice(0, 15);
}
