/**
 * `text` as a JSON object's members, or undefined when it is not JSON or not an object (an array,
 * a string, null): for what arrives from another node or from Redis, which is read, never trusted.
 */
export function readJsonObject(text: string): Readonly<Record<string, unknown>> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}
