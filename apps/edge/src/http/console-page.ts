/**
 * The console page: plain HTML, CSS and one module script on `@plate/client` (served beside it).
 * It opens one realtime connection (route 9, with a key or a client path) and keeps a list of
 * subscriptions on it (each with an optional filter, spec section 13), added and removed while it
 * is open; each message is logged once, tagged with the subscriptions it matched. It lists a
 * channel's presence members (route 10's GET, with the key). The key typed into it stays in the
 * page (sent only to the node typed in, as the Authorization header or the WebSocket's auth
 * frame). `MAX_ROWS` caps the log so that a busy channel cannot grow the page without bound.
 */
export const CONSOLE_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Plate console</title>
<style>
  :root { font: 14px/1.4 system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
  body { margin: 0 auto; max-width: 1100px; padding: 16px; }
  h1 { font-size: 20px; margin: 0 0 12px; }
  fieldset { border: 1px solid #ccd1da; border-radius: 6px; background: #fff; margin: 0 0 12px; padding: 10px 12px; }
  legend { font-weight: 600; padding: 0 4px; }
  label { display: inline-flex; flex-direction: column; font-size: 12px; color: #4a5264; margin: 0 10px 6px 0; }
  label.inline { flex-direction: row; align-items: center; gap: 4px; }
  input, select, textarea, button { font: inherit; }
  input[type=text], input[type=password], textarea { border: 1px solid #b8bfcc; border-radius: 4px; padding: 4px 6px; min-width: 220px; }
  textarea { width: 100%; box-sizing: border-box; min-height: 48px; font-family: ui-monospace, monospace; }
  button { border: 0; border-radius: 4px; padding: 6px 14px; background: #2f5bd3; color: #fff; cursor: pointer; }
  button.stop { background: #b3261e; }
  button.small { padding: 2px 10px; font-size: 12px; }
  .hint { font-size: 12px; color: #6b7385; }
  [data-state] .state, #state { font-weight: 600; }
  #state { margin-left: 8px; }
  #client-id { margin-left: 8px; font: 12px ui-monospace, monospace; color: #6b7385; }
  #state[data-state=open], tr[data-state=live] .state { color: #1a7f37; }
  #state[data-state=reconnecting], #state[data-state=connecting], tr[data-state=pending] .state { color: #9a6700; }
  tr[data-state=closed] .state { color: #b3261e; }
  table { width: 100%; border-collapse: collapse; background: #fff; font-size: 13px; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e6ec; vertical-align: top; }
  td:not(.body) { white-space: nowrap; }
  td.body { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
  #subscriptions { margin-top: 6px; }
  #subscriptions:not(:has(tr)) { display: none; }
  #subscriptions td.name, #subscriptions td.filter { font-family: ui-monospace, monospace; }
  #subscriptions td.filter { white-space: pre-wrap; word-break: break-all; }
  #members { margin-top: 6px; }
  #members:not(:has(tbody tr)) { display: none; }
  #members td.client, #members td.state { font-family: ui-monospace, monospace; }
  #members td.state { white-space: pre-wrap; word-break: break-all; }
  .tag { display: inline-block; font: 12px ui-monospace, monospace; background: #e8eefc; color: #1f3f99; border-radius: 3px; padding: 0 5px; margin: 0 4px 2px 0; }
  tr[data-kind=error] td { background: #fdecea; }
  tr[data-kind=reset] td { background: #fff4d6; }
  tr[data-kind=ready] td, tr[data-kind=published] td, tr[data-kind=subscribed] td, tr[data-kind=unsubscribed] td { color: #4a5264; }
  code.code { font-weight: 600; }
</style>
</head>
<body>
<h1>Plate console</h1>
<fieldset>
  <legend>Connect</legend>
  <label>Node <input id="base" type="text" placeholder="this node"></label>
  <label>Plate <input id="plate" type="text" value="demo"></label>
  <label>API key <input id="key" type="password" autocomplete="off"></label>
  <label>or a client path <input id="path" type="text" placeholder="/demo/s/…"></label>
  <label>Transport <select id="transport"><option value="sse">Server-Sent Events</option><option value="ws">WebSocket</option></select></label>
  <button id="connect" type="button">Connect</button><span id="state" data-state="closed">closed</span><span id="client-id"></span>
  <div class="hint">One connection carries every subscription below. With a client path the page connects with no key and lists the path's own channels and patterns (publishing needs the key).</div>
</fieldset>
<fieldset>
  <legend>Subscriptions</legend>
  <label>Channel or pattern <input id="channel" type="text" value="alerts"></label>
  <label class="inline"><input id="pattern" type="checkbox"> pattern (<code>*</code>, <code>?</code>)</label>
  <label>Filter (Koncorde JSON, optional) <input id="filter" type="text" placeholder='{"equals": {"status": "paid"}}'></label>
  <button id="subscribe" type="button">Subscribe</button>
  <div class="hint">Subscribing while disconnected connects first. Add and remove subscriptions while the connection is open; a drop reconnects once and resumes every one. With a filter, only the messages that match it are sent for that subscription (a refused filter closes it: fix it and subscribe again).</div>
  <table id="subscriptions"><tbody></tbody></table>
</fieldset>
<fieldset>
  <legend>Presence</legend>
  <label>Channel <input id="presence-channel" type="text" value="alerts"></label>
  <button id="members-show" type="button">Members</button><span id="members-count" class="hint"></span>
  <div class="hint">Who tracks presence on the channel now, on every node (asked with the key; click again to refresh).</div>
  <table id="members"><thead><tr><th>Client</th><th>User</th><th>State</th><th>Joined</th></tr></thead><tbody></tbody></table>
</fieldset>
<fieldset>
  <legend>Publish</legend>
  <label>Channel <input id="pub-channel" type="text" value="alerts"></label>
  <textarea id="pub-message" aria-label="Message (JSON)">{"text": "hello"}</textarea>
  <button id="publish" type="button">Publish</button>
</fieldset>
<table>
  <thead><tr><th>Time</th><th>What</th><th>Channel</th><th>Subscriptions</th><th>Id</th><th>Message or error</th></tr></thead>
  <tbody id="log"></tbody>
</table>
<script type="module">
import { PlateClient, PlateClientError, realtimePath } from "/console/client/index.js";

const MAX_ROWS = 500;
const $ = (id) => document.getElementById(id);
/** The realtime connection, while one is open (or reconnecting). */
let rt;
/** The subscriptions the page wants, by "c:<channel>" / "p:<pattern>": { name, filter, sub, count, error, row }. */
const wanted = new Map();

const label = (name) => name.channel ?? name.pattern;
const keyOf = (name) => (name.channel !== undefined ? "c:" : "p:") + label(name);
const nameOf = (info) => (info.channel !== undefined ? { channel: info.channel } : { pattern: info.pattern });
const node = () => $("base").value.trim() || location.origin;
const live = () => rt !== undefined && rt.state !== "closed";

function log(kind, { channel = "", tags = [], id = "", text = "", code } = {}) {
  const tr = document.createElement("tr");
  tr.dataset.kind = kind;
  for (const value of [new Date().toISOString().slice(11, 23), kind, channel]) tr.appendChild(document.createElement("td")).textContent = value;
  const matched = tr.appendChild(document.createElement("td"));
  matched.className = "tags";
  for (const tag of tags) {
    const span = matched.appendChild(document.createElement("span"));
    span.className = "tag";
    span.textContent = tag;
  }
  tr.appendChild(document.createElement("td")).textContent = id;
  const body = tr.appendChild(document.createElement("td"));
  body.className = "body";
  if (code !== undefined) {
    const c = body.appendChild(document.createElement("code"));
    c.className = "code";
    c.textContent = code;
    body.append(" " + text);
  } else {
    body.textContent = text;
  }
  const rows = $("log");
  rows.prepend(tr);
  while (rows.rows.length > MAX_ROWS) rows.deleteRow(-1);
}

function client() {
  return new PlateClient({ url: node(), plate: $("plate").value.trim(), key: $("key").value });
}

/** Shows each wanted subscription's state, message count and last id. */
function refresh() {
  for (const entry of wanted.values()) {
    const state = entry.sub?.state ?? "closed";
    entry.row.dataset.state = state;
    // Why it closed, when the service (or the client) refused it: invalid_filter, forbidden...
    entry.row.querySelector(".state").textContent = state === "closed" && entry.error ? state + ": " + entry.error : state;
    entry.row.querySelector(".filter").textContent = entry.filter === undefined ? "" : JSON.stringify(entry.filter);
    entry.row.querySelector(".count").textContent = entry.count + (entry.count === 1 ? " message" : " messages");
    entry.row.querySelector(".last").textContent = entry.sub?.lastId ?? "";
  }
}

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  $("connect").textContent = state === "closed" ? "Connect" : "Disconnect";
  $("connect").classList.toggle("stop", state !== "closed");
  if (state !== "open") $("client-id").textContent = "";
  refresh();
}

/** Asks the connection for one wanted subscription. */
function subscribe(entry) {
  entry.error = undefined;
  try {
    entry.sub = rt.subscribe(entry.name, () => (entry.count += 1), {
      ...(entry.filter === undefined ? {} : { filter: entry.filter }),
      onSubscribed: (info) => {
        log("subscribed", { channel: label(info), id: info.position ?? "" });
        refresh();
      },
      onReset: (reset) => log("reset", { channel: label(reset), code: reset.reason, text: reset.message }),
      onError: (error) => {
        if (!error.retryable) entry.error = error.code;
        log("error", { channel: label(entry.name), code: error.code, text: error.message + (error.retryable ? " (asking again)" : "") });
        refresh();
      },
    });
  } catch (error) {
    entry.error = error.code ?? "bad_request";
    log("error", { channel: label(entry.name), code: entry.error, text: error.message });
  }
  refresh();
}

/** Adds a subscription to the list (and to the connection, when one is open), with its filter (parsed JSON) if any. */
function want(name, filter) {
  const row = $("subscriptions").tBodies[0].insertRow();
  row.dataset.name = label(name);
  row.dataset.kind = name.channel !== undefined ? "channel" : "pattern";
  for (const [cls, text] of [["name", label(name)], ["kind", row.dataset.kind], ["filter", ""], ["state", ""], ["count", ""], ["last", ""]]) {
    const td = row.insertCell();
    td.className = cls;
    td.textContent = text;
  }
  const remove = row.insertCell().appendChild(document.createElement("button"));
  remove.type = "button";
  remove.className = "stop small unsubscribe";
  remove.textContent = "Unsubscribe";
  const entry = { name, filter, sub: undefined, count: 0, error: undefined, row };
  remove.addEventListener("click", () => {
    entry.sub?.unsubscribe();
    wanted.delete(keyOf(name));
    row.remove();
    log("unsubscribed", { channel: label(name) });
  });
  wanted.set(keyOf(name), entry);
  if (live()) subscribe(entry);
  return entry;
}

function connect() {
  const options = {
    transport: $("transport").value,
    onStateChange: setState,
    onReady: (ready) => {
      $("client-id").textContent = ready.clientId;
      log("ready", { text: "client " + ready.clientId, tags: ready.subscriptions.map(label) });
      // A client path's own channels and patterns join the list (claiming them makes no request).
      for (const info of ready.subscriptions) if (!wanted.has(keyOf(info))) want(nameOf(info));
    },
    onError: (error) => log("error", { code: error.code, text: error.message + (error.retryable ? " (reconnecting)" : "") }),
    onMessage: (m, delivered) => {
      const text = JSON.stringify(m.message) + (m.volatile === undefined ? "" : "  volatile: " + JSON.stringify(m.volatile));
      log("message", { channel: m.channel, tags: delivered.map((s) => label(s.name)), id: m.id, text });
      refresh();
    },
  };
  const path = $("path").value.trim();
  try {
    rt = path ? realtimePath(path, { ...options, base: node() }) : client().realtime(options);
  } catch (error) {
    log("error", { code: "bad_request", text: String(error) });
    return;
  }
  // In the same turn: they go in the connection's first request.
  for (const entry of wanted.values()) subscribe(entry);
}

$("connect").addEventListener("click", () => (live() ? rt.close() : connect()));

/** The filter typed in: undefined when empty, else its JSON (the client and the service check it is a valid filter). */
function typedFilter() {
  const text = $("filter").value.trim();
  if (text === "") return { filter: undefined };
  try {
    return { filter: JSON.parse(text) };
  } catch (error) {
    return { error: "The filter is not JSON: " + error.message };
  }
}

$("subscribe").addEventListener("click", () => {
  const text = $("channel").value.trim();
  const name = $("pattern").checked ? { pattern: text } : { channel: text };
  const typed = typedFilter();
  if (typed.error !== undefined) {
    log("error", { channel: text, code: "invalid_filter", text: typed.error });
    return;
  }
  const entry = wanted.get(keyOf(name));
  if (!live()) {
    if (entry === undefined) want(name, typed.filter);
    else entry.filter = typed.filter;
    connect();
  } else if (entry === undefined) {
    want(name, typed.filter);
  } else if (entry.sub === undefined || entry.sub.state === "closed") {
    entry.filter = typed.filter;
    subscribe(entry); // refused or ended before: ask again, with the filter typed now
  } else {
    log("error", { channel: text, code: "conflict", text: "Already subscribed on this connection." });
  }
});

/** Lists a channel's presence members (route 10's GET with the key). */
$("members-show").addEventListener("click", async () => {
  const channel = $("presence-channel").value.trim();
  const rows = $("members").tBodies[0];
  let presence;
  try {
    presence = await client().presence(channel);
  } catch (error) {
    rows.replaceChildren();
    $("members-count").textContent = "";
    if (error instanceof PlateClientError) log("error", { channel, code: error.code, text: error.message });
    else log("error", { channel, code: "network_error", text: String(error) });
    return;
  }
  rows.replaceChildren();
  for (const member of presence.members) {
    const tr = rows.insertRow();
    tr.dataset.clientId = member.clientId;
    for (const [cls, text] of [["client", member.clientId], ["user", member.user ?? ""], ["state", JSON.stringify(member.state)], ["joined", member.joinedAt]]) {
      const td = tr.insertCell();
      td.className = cls;
      td.textContent = text;
    }
  }
  $("members-count").dataset.channel = channel;
  $("members-count").textContent = " " + presence.count + (presence.count === 1 ? " member" : " members") + " of " + channel;
});

$("publish").addEventListener("click", async () => {
  let message;
  try {
    message = JSON.parse($("pub-message").value);
  } catch (error) {
    log("error", { code: "invalid_json", text: "The message is not JSON: " + error.message });
    return;
  }
  try {
    const published = await client().publish($("pub-channel").value.trim(), message);
    log("published", { channel: published.channel, id: published.id });
  } catch (error) {
    if (error instanceof PlateClientError) log("error", { code: error.code, text: error.message });
    else log("error", { code: "network_error", text: String(error) });
  }
});
</script>
</body>
</html>
`;
