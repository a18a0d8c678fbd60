import { PlateClientError } from "./errors.js";

/**
 * A subscription's filter (spec section 13): one JSON object in Koncorde's syntax (`equals`, `in`,
 * `range`, `exists`, `regexp`, `geo*`, combined with `and`, `or`, `not`, `bool`), e.g.
 * `{ equals: { status: "paid" } }`. The service tests it against each message: a message that is a
 * JSON object has its fields at the top level, any other value is under `_value`, and the event
 * name, if any, under `_event`. The client only checks its shape; the service says whether it is a
 * valid filter (`invalid_filter`).
 */
export type SubscriptionFilter = Readonly<Record<string, unknown>>;

/**
 * The JSON text of `filter` as the wire carries it (`?filter=`, `filter.<name>=`); throws
 * `invalid_filter` for anything but a JSON object, as the service would refuse it.
 */
export function filterText(filter: SubscriptionFilter): string {
  const refuse = (why: string, cause?: unknown) =>
    new PlateClientError(
      "invalid_filter",
      `A filter is one JSON object in Koncorde's syntax, e.g. {"equals":{"status":"paid"}}: ${why}.`,
      cause === undefined ? {} : { cause },
    );
  if (typeof filter !== "object" || filter === null || Array.isArray(filter)) throw refuse("this is not an object");
  try {
    return JSON.stringify(filter);
  } catch (err) {
    throw refuse(`it is not JSON (${String(err)})`, err);
  }
}
