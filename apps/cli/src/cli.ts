import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";

/**
 * `plate`: an operator's command line for a running node's admin API (and route 4, to mint client
 * paths). Each command is one HTTP call; the output is a table or a line for people, or the API's
 * `data` as JSON with `--json`. Exit codes: 0 done, 1 the node refused (its error code is shown),
 * 2 a usage error.
 */

export const USAGE = `plate: manage a Plate node's plates, keys, signing keys and client paths

Usage: plate [--url URL] [--admin-token TOKEN] [--json] <command>

Commands:
  plates list
  plates get <plate>
  plates create [--id ID] [--name NAME] [--history-count N --history-age-ms MS]
  plates history <plate> (--history-count N --history-age-ms MS | --clear)
  plates limits <plate> [--set 'publishPerS=100,connections=50' | --clear]
  plates storage <plate>
  plates usage <plate> [--by day|hour] [--from YYYY-MM-DD[THH]] [--to YYYY-MM-DD[THH]]
  plates delete <plate>
  keys list <plate>
  keys create <plate> [--name NAME] [--scopes publish,subscribe,client] [--channels 'room:*,alerts']
  keys revoke <plate> <key-id>
  signing-keys list <plate>
  signing-keys create <plate> [--alg HS256|ES256|RS256] [--public-key FILE (ES256, RS256)]
  signing-keys delete <plate> <signing-key-id>
  client-path <plate> <channel> --key SECRET [--pattern] [--ttl MS] [--max-uses N] [--max-dur MS]

Options:
  --url URL            the node (default $PLATE_URL, else http://127.0.0.1:8080)
  --admin-token TOKEN  the node's ADMIN_TOKEN (default $PLATE_ADMIN_TOKEN)
  --key SECRET         a plate's API key, for client-path (default $PLATE_KEY)
  --json               print the API's data as JSON instead of a table
`;

/** Where the command line writes, and what it reads from the environment. */
export interface Io {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
}

/** A refusal of the node: its status and the spec's error code. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A command line that cannot be run as given. */
class UsageError extends Error {}

const OPTIONS = {
  url: { type: "string" },
  "admin-token": { type: "string" },
  key: { type: "string" },
  json: { type: "boolean", default: false },
  id: { type: "string" },
  name: { type: "string" },
  scopes: { type: "string" },
  channels: { type: "string" },
  pattern: { type: "boolean", default: false },
  ttl: { type: "string" },
  "max-uses": { type: "string" },
  "max-dur": { type: "string" },
  "history-count": { type: "string" },
  "history-age-ms": { type: "string" },
  clear: { type: "boolean", default: false },
  set: { type: "string" },
  by: { type: "string" },
  from: { type: "string" },
  to: { type: "string" },
  alg: { type: "string" },
  "public-key": { type: "string" },
  help: { type: "boolean", short: "h", default: false },
} as const;

type Values = ReturnType<typeof parse>["values"];

function parse(argv: readonly string[]) {
  return parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
}

/** Runs one command line; answers the exit code. */
export async function run(argv: readonly string[], io: Io): Promise<number> {
  let parsed;
  try {
    parsed = parse(argv);
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (positionals.length === 0) {
    io.err(USAGE);
    return 2;
  }
  const api = new Api(values.url ?? io.env.PLATE_URL ?? "http://127.0.0.1:8080", values["admin-token"] ?? io.env.PLATE_ADMIN_TOKEN);
  try {
    const result = await dispatch(api, positionals, values, io.env);
    io.out(values.json ? JSON.stringify(result.data, null, 2) + "\n" : result.text);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof ApiError) {
      io.err(values.json ? JSON.stringify({ error: { status: err.status, code: err.code, message: err.message } }) + "\n" : `error: ${err.code}: ${err.message}\n`);
      return 1;
    }
    io.err(`error: ${(err as Error).message}\n`);
    return 1;
  }
}

/** What a command answers: the API's data, and how a person reads it. */
interface Result {
  readonly data: unknown;
  readonly text: string;
}

async function dispatch(api: Api, positionals: readonly string[], values: Values, env: Io["env"]): Promise<Result> {
  const [group, action, ...rest] = positionals;
  const arg = (i: number, what: string): string => {
    const value = rest[i];
    if (value === undefined) throw new UsageError(`missing ${what}`);
    return encodeURIComponent(value);
  };
  switch (`${group} ${action ?? ""}`.trim()) {
    case "plates list": {
      const plates = (await api.admin("GET", "/admin/plates")) as Plate[];
      return { data: plates, text: table(["ID", "NAME", "CREATED", "HISTORY"], plates.map(plateRow)) };
    }
    case "plates get": {
      const plate = (await api.admin("GET", `/admin/plates/${arg(0, "<plate>")}`)) as Plate;
      return { data: plate, text: table(["ID", "NAME", "CREATED", "HISTORY"], [plateRow(plate)]) };
    }
    case "plates create": {
      const body: Record<string, unknown> = {};
      if (values.id !== undefined) body.id = values.id;
      if (values.name !== undefined) body.name = values.name;
      const history = historyOf(values);
      if (history !== undefined) body.history = history;
      const created = (await api.admin("POST", "/admin/plates", body)) as { plate: Plate; key: Key & { secret: string } };
      return {
        data: created,
        text:
          table(["ID", "NAME", "CREATED", "HISTORY"], [plateRow(created.plate)]) +
          `\nkey ${created.key.id} (every scope, every channel); its secret, shown once:\n${created.key.secret}\n`,
      };
    }
    case "plates history": {
      const history = values.clear ? null : historyOf(values);
      if (history === undefined) throw new UsageError("plates history needs --history-count and --history-age-ms, or --clear");
      const plate = (await api.admin("PATCH", `/admin/plates/${arg(0, "<plate>")}`, { history })) as Plate;
      return { data: plate, text: table(["ID", "NAME", "CREATED", "HISTORY"], [plateRow(plate)]) };
    }
    case "plates limits": {
      // Without --set or --clear, reads them: the limits in force, and which the plate has of its own.
      const path = `/admin/plates/${arg(0, "<plate>")}/limits`;
      const data = (
        values.clear ? await api.admin("DELETE", path) : values.set !== undefined ? await api.admin("PUT", path, limitsOf(values.set)) : await api.admin("GET", path)
      ) as { limits: Record<string, number>; own: Record<string, number> };
      const rows = Object.entries(data.limits).map(([name, value]) => [name, String(value), name in data.own ? "plate" : "node"]);
      return { data, text: table(["LIMIT", "IN FORCE", "FROM"], rows) };
    }
    case "plates storage": {
      // What the plate's history holds now (over every node), beside its budget (0 = no limit).
      const data = (await api.admin("GET", `/admin/plates/${arg(0, "<plate>")}/storage`)) as {
        channels: number;
        bytes: number;
        limits: { historyChannels: number; historyBytes: number };
      };
      const rows = [
        ["channels with history", String(data.channels), String(data.limits.historyChannels)],
        ["bytes", String(data.bytes), String(data.limits.historyBytes)],
      ];
      return { data, text: table(["HISTORY", "USED", "LIMIT"], rows) };
    }
    case "plates usage": {
      const query = new URLSearchParams();
      for (const name of ["by", "from", "to"] as const) if (values[name] !== undefined) query.set(name, values[name]);
      const path = `/admin/plates/${arg(0, "<plate>")}/usage${query.size === 0 ? "" : `?${query.toString()}`}`;
      const rows = (await api.admin("GET", path)) as Record<string, number | string>[];
      const columns = ["start", "published", "publishedBytes", "delivered", "tokensMinted", "peakConnections"];
      return { data: rows, text: table(["START", "PUBLISHED", "BYTES", "DELIVERED", "TOKENS", "PEAK CONNECTIONS"], rows.map((r) => columns.map((c) => String(r[c])))) };
    }
    case "plates delete": {
      const id = arg(0, "<plate>");
      await api.admin("DELETE", `/admin/plates/${id}`);
      return { data: { deleted: decodeURIComponent(id) }, text: `deleted plate ${decodeURIComponent(id)} and its keys\n` };
    }
    case "keys list": {
      const keys = (await api.admin("GET", `/admin/plates/${arg(0, "<plate>")}/keys`)) as Key[];
      return { data: keys, text: table(["ID", "NAME", "SCOPES", "CHANNELS", "CREATED"], keys.map(keyRow)) };
    }
    case "keys create": {
      const body: Record<string, unknown> = {};
      if (values.name !== undefined) body.name = values.name;
      if (values.scopes !== undefined) body.scopes = list(values.scopes);
      if (values.channels !== undefined) body.channels = list(values.channels);
      const key = (await api.admin("POST", `/admin/plates/${arg(0, "<plate>")}/keys`, body)) as Key & { secret: string };
      return {
        data: key,
        text: table(["ID", "NAME", "SCOPES", "CHANNELS"], [keyRow(key).slice(0, 4)]) + `\nits secret, shown once:\n${key.secret}\n`,
      };
    }
    case "keys revoke": {
      const plate = arg(0, "<plate>");
      const keyId = arg(1, "<key-id>");
      await api.admin("DELETE", `/admin/plates/${plate}/keys/${keyId}`);
      const text = `revoked key ${decodeURIComponent(keyId)}; its connections are closed\n`;
      return { data: { revoked: decodeURIComponent(keyId) }, text };
    }
    case "signing-keys list": {
      const keys = (await api.admin("GET", `/admin/plates/${arg(0, "<plate>")}/signing-keys`)) as SigningKey[];
      return { data: keys, text: table(["ID", "ALG", "CREATED"], keys.map((k) => [k.id, k.alg, k.createdAt])) };
    }
    case "signing-keys create": {
      const body: Record<string, unknown> = {};
      if (values.alg !== undefined) body.alg = values.alg;
      if (values["public-key"] !== undefined) body.publicKey = await readFile(values["public-key"], "utf8");
      const key = (await api.admin("POST", `/admin/plates/${arg(0, "<plate>")}/signing-keys`, body)) as SigningKey & { secret?: string };
      const shown = key.secret === undefined ? "" : `\nits secret (base64url; sign HS256 tokens with its bytes), shown once:\n${key.secret}\n`;
      return { data: key, text: table(["ID", "ALG", "CREATED"], [[key.id, key.alg, key.createdAt]]) + shown };
    }
    case "signing-keys delete": {
      const plate = arg(0, "<plate>");
      const keyId = arg(1, "<signing-key-id>");
      await api.admin("DELETE", `/admin/plates/${plate}/signing-keys/${keyId}`);
      return { data: { deleted: decodeURIComponent(keyId) }, text: `deleted signing key ${decodeURIComponent(keyId)}; its tokens are refused from now on\n` };
    }
    default:
      if (group === "client-path") return clientPath(api, positionals.slice(1), values, env);
      throw new UsageError(`unknown command: ${positionals.join(" ")}`);
  }
}

async function clientPath(api: Api, args: readonly string[], values: Values, env: Io["env"]): Promise<Result> {
  const [plate, channel] = args;
  if (plate === undefined || channel === undefined) throw new UsageError("client-path needs <plate> <channel>");
  const key = values.key ?? env.PLATE_KEY;
  if (key === undefined) throw new UsageError("client-path needs the plate's API key: --key or $PLATE_KEY");
  const params: Record<string, unknown> = {};
  if (values.pattern) params.pattern = true;
  if (values.ttl !== undefined) params.ttl = values.ttl;
  if (values["max-uses"] !== undefined) params.max_uses = values["max-uses"];
  if (values["max-dur"] !== undefined) params.max_dur = values["max-dur"];
  const path = `/${encodeURIComponent(plate)}/pubsub/${encodeURIComponent(channel)}/client`;
  const data = (await api.call("POST", path, key, params)) as { path: string; expiresAt: string; maxUses: number; maxDuration: number };
  const limits = `expires ${data.expiresAt}, max_uses ${data.maxUses || "unlimited"}, max_dur ${data.maxDuration ? `${data.maxDuration} ms` : "unlimited"}`;
  return { data, text: `${api.base}${data.path}\n(${limits})\n` };
}

interface Plate {
  readonly id: string;
  readonly name: string;
  readonly createdAt: string;
  readonly history?: { readonly count: number; readonly ageMs: number };
}

/** A signing key as the admin API shows it (route 11). */
interface SigningKey {
  readonly id: string;
  readonly alg: string;
  readonly createdAt: string;
}

interface Key {
  readonly id: string;
  readonly name: string;
  readonly scopes: readonly string[];
  readonly channels: readonly string[] | null;
  readonly createdAt: string;
}

function plateRow(plate: Plate): string[] {
  const history = plate.history === undefined ? "default" : `${plate.history.count} msgs, ${plate.history.ageMs} ms`;
  return [plate.id, plate.name, plate.createdAt, history];
}

function keyRow(key: Key): string[] {
  return [key.id, key.name, key.scopes.join(","), key.channels === null ? "*" : key.channels.join(","), key.createdAt];
}

function historyOf(values: Values): { count: number; ageMs: number } | undefined {
  const count = values["history-count"];
  const age = values["history-age-ms"];
  if (count === undefined && age === undefined) return undefined;
  if (count === undefined || age === undefined) throw new UsageError("give both --history-count and --history-age-ms");
  return { count: Number(count), ageMs: Number(age) };
}

/** `--set 'name=value,...'` as a limits body; the node checks the names and values. */
function limitsOf(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of list(text)) {
    const [name, value, ...rest] = item.split("=");
    if (name === undefined || value === undefined || rest.length > 0 || name.trim() === "" || !/^\d+$/.test(value.trim())) {
      throw new UsageError(`--set takes name=value pairs of whole numbers, e.g. publishPerS=100,connections=50 (got "${item}")`);
    }
    out[name.trim()] = Number(value.trim());
  }
  return out;
}

function list(text: string): string[] {
  return text.split(",").map((item) => item.trim()).filter((item) => item !== "");
}

/** Columns padded to their widest cell, two spaces apart. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  if (rows.length === 0) return "(none)\n";
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** The node's HTTP API as the command line uses it. */
class Api {
  readonly base: string;

  constructor(
    base: string,
    private readonly adminToken: string | undefined,
  ) {
    this.base = base.replace(/\/+$/, "");
  }

  admin(method: string, path: string, body?: unknown): Promise<unknown> {
    if (this.adminToken === undefined) throw new UsageError("admin commands need the node's ADMIN_TOKEN: --admin-token or $PLATE_ADMIN_TOKEN");
    return this.call(method, path, this.adminToken, body);
  }

  async call(method: string, path: string, bearer: string, body?: unknown): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: { Authorization: `Bearer ${bearer}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new Error(`cannot reach ${this.base}: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`);
    }
    const text = await res.text();
    const parsed = text === "" ? undefined : (JSON.parse(text) as { data?: unknown; error?: { code: string; message: string } });
    if (!res.ok) throw new ApiError(res.status, parsed?.error?.code ?? `http_${res.status}`, parsed?.error?.message ?? res.statusText);
    return parsed?.data;
  }
}
