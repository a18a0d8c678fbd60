import { expect } from "vitest";
import { adminCall } from "./admin.js";
import { KEYS } from "./node.js";

/** An HTTP answer as a test reads it: status, headers, raw text and the parsed JSON body (if any). */
export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly body: any;
}

/**
 * Sends one request with `fetch` and reads the whole answer. `body` is sent as is (a string, bytes
 * or a stream); `headers` exactly as given, so a test controls Content-Type and Authorization.
 */
export async function call(
  base: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: string | Uint8Array | ReadableStream<Uint8Array> } = {},
): Promise<Answer> {
  const init: RequestInit & { duplex?: "half" } = { method, headers: options.headers ?? {} };
  if (options.body !== undefined) init.body = options.body as NonNullable<RequestInit["body"]>;
  if (options.body instanceof ReadableStream) init.duplex = "half";
  const res = await fetch(`${base}${path}`, init);
  const text = await res.text();
  let body: unknown;
  try {
    body = text === "" ? undefined : JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, text, body };
}

/** Creates an API key on `plate` through the admin API; answers its id and secret. */
export async function createKey(
  base: string,
  plate: string,
  input: { scopes?: string[]; channels?: string[]; name?: string } = {},
): Promise<{ id: string; secret: string }> {
  const res = await adminCall(base, "POST", `/admin/plates/${plate}/keys`, { body: { name: "test", ...input } });
  expect(res.status).toBe(201);
  return { id: res.body.data.id, secret: res.body.data.secret };
}

/** Revokes a key through the admin API. */
export async function revokeKey(base: string, plate: string, keyId: string): Promise<void> {
  const res = await adminCall(base, "DELETE", `/admin/plates/${plate}/keys/${keyId}`);
  expect(res.status).toBe(204);
}

/**
 * Mints a client token (route 4) with GET and the query `params`; answers the whole answer.
 * `key` defaults to the acme bootstrap key.
 */
export function mintToken(
  base: string,
  plate: string,
  channel: string,
  params: Record<string, string> = {},
  key: string = KEYS.acme,
): Promise<Answer> {
  const query = new URLSearchParams(params).toString();
  return call(base, "GET", `/${plate}/pubsub/${channel}/client${query === "" ? "" : `?${query}`}`, {
    headers: { Authorization: `Bearer ${key}` },
  });
}

/** Mints a client token that must succeed; answers the `data` of route 4's answer. */
export async function mintPath(
  base: string,
  plate: string,
  channel: string,
  params: Record<string, string> = {},
  key: string = KEYS.acme,
): Promise<{ path: string; token: string; [field: string]: unknown }> {
  const res = await mintToken(base, plate, channel, params, key);
  expect(res.status, res.text).toBe(200);
  return res.body.data;
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
