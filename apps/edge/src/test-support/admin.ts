import { ADMIN_TOKEN } from "./node.js";

/** An admin route's answer: status, raw text (to look for leaked secrets) and parsed JSON body. */
export interface AdminAnswer {
  readonly status: number;
  readonly text: string;
  readonly body: any;
}

/**
 * Calls an admin route with `Authorization: Bearer <ADMIN_TOKEN>` (or `token`; `null` sends no
 * header). `body` is sent as JSON when given; without it the request has no body at all.
 */
export async function adminCall(
  base: string,
  method: string,
  path: string,
  options: { body?: unknown; token?: string | null } = {},
): Promise<AdminAnswer> {
  const headers: Record<string, string> = {};
  const token = options.token === undefined ? ADMIN_TOKEN : options.token;
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await res.text();
  return { status: res.status, text, body: text === "" ? undefined : JSON.parse(text) };
}
