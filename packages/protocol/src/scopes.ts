/** What an API key may do. `client` mints client tokens (route 4). */
export const SCOPES = ["publish", "subscribe", "client"] as const;

/** One API key scope. */
export type Scope = (typeof SCOPES)[number];

/** Whether `value` names a scope. */
export function isScope(value: unknown): value is Scope {
  return typeof value === "string" && (SCOPES as readonly string[]).includes(value);
}
