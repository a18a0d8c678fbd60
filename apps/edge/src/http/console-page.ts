/**
 * The console page: plain HTML, CSS and one module script on `@plate/client` (served beside it).
 * The key typed into it stays in the page (sent only to this node, as the Authorization header).
 * `MAX_ROWS` caps the log so that a busy channel cannot grow the page without bound.
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
  .hint { font-size: 12px; color: #6b7385; }
  #state { font-weight: 600; margin-left: 8px; }
  #state[data-state=open] { color: #1a7f37; }
  #state[data-state=reconnecting], #state[data-state=connecting] { color: #9a6700; }
  table { width: 100%; border-collapse: collapse; background: #fff; font-size: 13px; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e6ec; vertical-align: top; }
  td:not(.body) { white-space: nowrap; }
  td.body { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
  tr[data-kind=error] td { background: #fdecea; }
  tr[data-kind=reset] td { background: #fff4d6; }
  tr[data-kind=ready] td, tr[data-kind=published] td { color: #4a5264; }
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
  <div class="hint">With a client path the page subscribes to what the path allows, with no key (publishing needs the key).</div>
</fieldset>
<fieldset>
  <legend>Subscribe</legend>
  <label>Channel or pattern <input id="channel" type="text" value="alerts"></label>
  <label class="inline"><input id="pattern" type="checkbox"> pattern (<code>*</code>, <code>?</code>)</label>
  <label>Transport <select id="transport"><option value="sse">Server-Sent Events</option><option value="ws">WebSocket</option></select></label>
  <button id="subscribe" type="button">Subscribe</button><span id="state" data-state="closed">closed</span>
</fieldset>
<fieldset>
  <legend>Publish</legend>
  <label>Channel <input id="pub-channel" type="text" value="alerts"></label>
  <textarea id="pub-message" aria-label="Message (JSON)">{"text": "hello"}</textarea>
  <button id="publish" type="button">Publish</button>
</fieldset>
<table>
  <thead><tr><th>Time</th><th>What</th><th>Channel</th><th>Id</th><th>Message or error</th></tr></thead>
  <tbody id="log"></tbody>
</table>
<script type="module">
import { PlateClient, PlateClientError, subscribePath } from "/console/client/index.js";

const MAX_ROWS = 500;
const $ = (id) => document.getElementById(id);
let unsubscribe;

function row(kind, { channel = "", id = "", text = "", code } = {}) {
  const tr = document.createElement("tr");
  tr.dataset.kind = kind;
  const cells = [new Date().toISOString().slice(11, 23), kind, channel, id];
  for (const value of cells) tr.appendChild(document.createElement("td")).textContent = value;
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
  const log = $("log");
  log.prepend(tr);
  while (log.rows.length > MAX_ROWS) log.deleteRow(-1);
}

function client() {
  return new PlateClient({ url: $("base").value.trim() || location.origin, plate: $("plate").value.trim(), key: $("key").value });
}

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  const live = state !== "closed";
  $("subscribe").textContent = live ? "Unsubscribe" : "Subscribe";
  $("subscribe").classList.toggle("stop", live);
  if (!live) unsubscribe = undefined;
}

$("subscribe").addEventListener("click", () => {
  if (unsubscribe) {
    unsubscribe();
    return;
  }
  const options = {
    transport: $("transport").value,
    onReady: (ready) => row("ready", { channel: ready.channel, id: ready.position ?? "", text: ready.pattern ? "pattern" : "" }),
    onReset: (reset) => row("reset", { channel: reset.channel, code: reset.reason, text: reset.message }),
    onError: (error) => row("error", { code: error.code, text: error.message + (error.retryable ? " (reconnecting)" : "") }),
    onStateChange: setState,
  };
  const show = (m) => row("message", { channel: m.channel, id: m.id, text: JSON.stringify(m.message) });
  const path = $("path").value.trim();
  try {
    unsubscribe = path
      ? subscribePath(path, show, { ...options, base: $("base").value.trim() || location.origin })
      : client().subscribe($("channel").value.trim(), show, { ...options, pattern: $("pattern").checked });
  } catch (error) {
    row("error", { code: "bad_request", text: String(error) });
  }
});

$("publish").addEventListener("click", async () => {
  let message;
  try {
    message = JSON.parse($("pub-message").value);
  } catch (error) {
    row("error", { code: "invalid_json", text: "The message is not JSON: " + error.message });
    return;
  }
  try {
    const published = await client().publish($("pub-channel").value.trim(), message);
    row("published", { channel: published.channel, id: published.id });
  } catch (error) {
    if (error instanceof PlateClientError) row("error", { code: error.code, text: error.message });
    else row("error", { code: "network_error", text: String(error) });
  }
});
</script>
</body>
</html>
`;
