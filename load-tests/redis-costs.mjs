// What Plate asks of Redis: commands per publish, per subscribe and unsubscribe, and what a node
// with no interest in a channel receives of it. Starts its own redis-server and two edge nodes
// (as the bench starts them; run `npm run build` first), drives them over HTTP/SSE, and reads
// Redis' own counters (INFO commandstats, PUBSUB NUMSUB, CLIENT LIST). Prints one JSON object.
//
//   npm run build && node load-tests/redis-costs.mjs
import { request } from "node:http";
import { Redis } from "ioredis";
import { startRedis } from "@plate/testing";
import { startPlate } from "./dist/servers.js";

/** Publishes measured. */
const PUBLISHES = 1000;
/** SSE subscribers opened and closed on one channel. */
const SUBSCRIBERS = 100;
const KEY = "costs-secret-0123456789abcdefgh";

const redis = await startRedis({ fromEnv: false });
const admin = new Redis(redis.url);
const nodes = [];
try {
  for (let i = 0; i < 2; i++) {
    const node = await startPlate({ cpu: undefined, redisUrl: redis.url, plate: "costs", key: KEY });
    nodes.push({ ...node, url: `http://127.0.0.1:${node.port}` });
  }
  const [a, b] = nodes;

  // Warm: the key cache and Lua scripts loaded, so the figures are the steady state.
  await publish(a, "warm", 0);

  let before = await commandStats();
  for (let i = 0; i < PUBLISHES; i++) await publish(a, "nobody", i);
  const perPublishNoSubscriber = perUnit(before, await commandStats(), PUBLISHES);

  // A subscriber on node A only; node B has no interest in "watched".
  const watcher = await openSse(a, "watched");
  before = await commandStats();
  for (let i = 0; i < PUBLISHES; i++) await publish(b, "watched", i);
  const perPublishWithSubscriber = perUnit(before, await commandStats(), PUBLISHES);
  const numsub = Number((await admin.pubsub("NUMSUB", "plate:costs:watched"))[1]);
  const clients = await subscriberClients();
  watcher.destroy();

  // Subscribers arriving on a channel and leaving it: only the first and the last reach Redis.
  before = await commandStats();
  const subs = [];
  for (let i = 0; i < SUBSCRIBERS; i++) subs.push(await openSse(a, "crowd"));
  const subscribeCost = perUnit(before, await commandStats(), SUBSCRIBERS);
  before = await commandStats();
  for (const s of subs) s.destroy();
  await new Promise((r) => setTimeout(r, 500));
  const unsubscribeCost = perUnit(before, await commandStats(), SUBSCRIBERS);

  console.log(
    JSON.stringify(
      {
        publishes: PUBLISHES,
        redisCommandsPerPublish_noSubscriber: perPublishNoSubscriber,
        redisCommandsPerPublish_oneSubscriberOnOtherNode: perPublishWithSubscriber,
        numsubOfWatchedChannel: numsub,
        subscriberConnections: clients,
        subscribers: SUBSCRIBERS,
        redisCommandsPerSubscribe_sameChannel: subscribeCost,
        redisCommandsPerUnsubscribe_sameChannel: unsubscribeCost,
      },
      null,
      2,
    ),
  );
} finally {
  for (const n of nodes) await n.stop();
  admin.disconnect();
  await redis.stop();
}

async function publish(node, channel, i) {
  const res = await fetch(`${node.url}/costs/pubsub/${channel}/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ message: i }),
  });
  if (res.status !== 200) throw new Error(`publish: ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
}

function openSse(node, channel) {
  return new Promise((resolve, reject) => {
    const req = request(`${node.url}/costs/pubsub/${channel}/subscribe`, { headers: { Authorization: `Bearer ${KEY}` } }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        if (chunk.includes("event: ready")) resolve(req);
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/** Calls per command from INFO commandstats. */
async function commandStats() {
  const info = await admin.info("commandstats");
  const stats = {};
  for (const [, name, calls] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) stats[name] = Number(calls);
  return stats;
}

/** What the plate's nodes sent, per unit, leaving out this script's own INFO/PUBSUB calls. */
function perUnit(before, after, units) {
  const out = {};
  for (const [name, calls] of Object.entries(after)) {
    if (["info", "pubsub", "client"].includes(name)) continue;
    const delta = calls - (before[name] ?? 0);
    if (delta > 0) out[name] = Math.round((delta / units) * 1000) / 1000;
  }
  return out;
}

/** Each subscriber connection: its name and how many channels and patterns it holds. */
async function subscriberClients() {
  const list = await admin.client("LIST");
  return list
    .split("\n")
    .filter((line) => / name=plate-\S+-sub /.test(line))
    .map((line) => ({ name: /name=(\S+)/.exec(line)[1], sub: Number(/ sub=(\d+)/.exec(line)[1]), psub: Number(/ psub=(\d+)/.exec(line)[1]) }));
}
