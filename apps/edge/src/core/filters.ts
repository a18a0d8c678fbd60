import { randomBytes } from "node:crypto";
import { Koncorde } from "koncorde";
import type { NormalizedFilter } from "koncorde";
import { PlateError } from "@plate/protocol";
import type { FilterSpec, PlateId } from "@plate/protocol";

/** The limits on filters (route 13), from the node's settings. */
export interface FilterSettings {
  /** `FILTER_MAX_BYTES`: the largest filter, as JSON text. */
  readonly maxBytes: number;
  /** `FILTER_MAX_CONDITIONS`: the most conditions a filter holds once Koncorde has normalized it. */
  readonly maxConditions: number;
  /** `FILTERS_PER_PLATE`: filtered subscriptions one plate may hold on one node. */
  readonly perPlate: number;
}

/**
 * A subscription's filter, compiled: Koncorde's normalized form, in the index of the subscription's
 * topic (`topicKey`). Two subscriptions of a topic with the same filter (whatever its spelling)
 * share its `id`.
 */
export interface Filter {
  readonly normalized: NormalizedFilter;
  /** Koncorde's id of the normalized filter in its index. */
  readonly id: string;
  /** The topic key it was compiled for. */
  readonly index: string;
}

/**
 * The node's filter engine (route 13): one Koncorde engine, one index per topic with filtered
 * subscriptions. A filter is compiled once when it is asked for (`compile`: validated, normalized,
 * sized) and stored while at least one subscription holds it; a message is tested once per topic
 * per node (`test`), which answers the ids of every filter it matches, whatever their number.
 *
 * Koncorde runs regular expressions on RE2 (linear time), so a client's `regexp` cannot stall the
 * node. The conditions cap bounds what one filter costs to store and test.
 */
export class Filters {
  readonly #engine: Koncorde;
  /** Where a filter is stored once, and removed, before any subscription holds it (see `compile`). */
  readonly #trial: Koncorde;
  /** Filtered subscriptions per plate on this node. */
  readonly #perPlate = new Map<PlateId, number>();

  constructor(private readonly settings: FilterSettings) {
    // Koncorde's types say ArrayBuffer; it checks for a Buffer of 32 bytes. Filters are hashed with
    // this seed, so their ids are the node's own.
    const seed = randomBytes(32) as unknown as ArrayBuffer;
    this.#engine = new Koncorde({ maxConditions: settings.maxConditions, regExpEngine: "re2", seed });
    this.#trial = new Koncorde({ maxConditions: settings.maxConditions, regExpEngine: "re2", seed });
  }

  /**
   * Compiles a subscription's filter for a topic: its parts ANDed (an enforced filter and the
   * client's). Throws `invalid_filter` (with Koncorde's explanation) for one that is not a valid
   * filter, and `payload_too_large` for a part past `FILTER_MAX_BYTES`.
   */
  compile(parts: readonly FilterSpec[], index: string): Filter {
    // Each part is sized on its own: an enforced filter and the client's may each be as large as one filter.
    for (const part of parts) this.check(part);
    const spec: FilterSpec = parts.length === 1 ? parts[0]! : { and: parts };
    // Koncorde rewrites a filter as an OR of ANDs before it counts its conditions, and that rewrite
    // grows exponentially with nested and/or/not: 800 bytes of ANDed pairs of ORs took 3 s of the
    // node's only thread. The size of the rewrite is bounded here first, without making it.
    if (expansion(spec, this.settings.maxConditions).positive > this.settings.maxConditions) {
      throw new PlateError(
        "invalid_filter",
        `Invalid filter: too complex (its and/or/not combinations expand to more than ${this.settings.maxConditions} alternatives).`,
      );
    }
    // A geo filter around a point out of range makes the native R-tree under Koncorde abort the
    // whole process (a failed assertion, not an exception): such points are refused here.
    const outOfRange = pointOutOfRange(spec);
    if (outOfRange !== undefined) throw new PlateError("invalid_filter", `Invalid filter: ${outOfRange}`);
    let normalized: NormalizedFilter;
    try {
      normalized = this.#engine.normalize(spec, index);
      // Some refusals come only when a filter is stored (an inverted bounding box): stored once in
      // a scratch engine first (which drops the index again when it empties), so the
      // subscription's own storing cannot fail half way.
      this.#trial.store(normalized);
      this.#trial.remove(normalized.id, index);
    } catch (err) {
      throw new PlateError("invalid_filter", `Invalid filter: ${err instanceof Error ? err.message : String(err)}`);
    }
    return { normalized, id: normalized.id, index };
  }

  /** Throws `payload_too_large` for a filter past `FILTER_MAX_BYTES`; answers its JSON text. */
  check(spec: FilterSpec): string {
    const text = JSON.stringify(spec);
    if (Buffer.byteLength(text) > this.settings.maxBytes) {
      throw new PlateError("payload_too_large", `A filter is at most ${this.settings.maxBytes} bytes of JSON.`);
    }
    return text;
  }

  /** Counts a filtered subscription of `plateId`; throws `quota_exceeded` past `max` (its `FILTERS_PER_PLATE` in force). */
  admit(plateId: PlateId, max = this.settings.perPlate): void {
    const count = this.#perPlate.get(plateId) ?? 0;
    if (count >= max) {
      throw new PlateError("quota_exceeded", `This plate holds at most ${max} filtered subscriptions on one node.`);
    }
    this.#perPlate.set(plateId, count + 1);
  }

  /** Lets go of a count taken by `admit`. */
  release(plateId: PlateId): void {
    const count = (this.#perPlate.get(plateId) ?? 1) - 1;
    if (count <= 0) this.#perPlate.delete(plateId);
    else this.#perPlate.set(plateId, count);
  }

  /**
   * Stores `filter` in the engine. The fan-out calls it with the first subscription of a topic
   * holding that filter id, and `letGo` after the last (its group of subscriptions is the count).
   */
  hold(filter: Filter): void {
    this.#engine.store(filter.normalized);
  }

  /** Removes `filter` from the engine (its index goes with its last filter). */
  letGo(filter: Filter): void {
    this.#engine.remove(filter.id, filter.index);
  }

  /** The ids of the filters of `index` that `document` matches. */
  test(document: Record<string, unknown>, index: string): string[] {
    return this.#engine.test(document, index);
  }

  /** Whether `document` matches `filter` (a replayed message, tested for one subscription). */
  matches(document: Record<string, unknown>, filter: Filter): boolean {
    return this.test(document, filter.index).includes(filter.id);
  }

  /** Filters stored, over every index (for tests). */
  get stored(): number {
    let n = 0;
    for (const index of this.#engine.getIndexes()) n += this.#engine.getFilterIds(index).length;
    return n;
  }
}

/**
 * The document a message's filters are tested against: the published `message` when it is a JSON
 * object (its fields at the top), otherwise `{"_value": message}`; with `_event`, the event name the
 * publisher gave, when it gave one (a field of that name in the message is shadowed). `body` is the
 * message's JSON text; the object is the caller's to keep (it is made here, once per message).
 */
export function filterDocument(body: string, event: string | undefined): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    value = body;
  }
  const document: Record<string, unknown> =
    typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : { _value: value };
  if (event !== undefined) document._event = event;
  return document;
}

/**
 * Why a geo operator of `spec` names a point out of range (latitude -90..90, longitude
 * -180..180), in any of the forms Koncorde reads as a point (`{lat, lon}`, `"lat,lon"`, `[lon,
 * lat]`, a geohash); undefined when none does.
 */
export function pointOutOfRange(spec: unknown): string | undefined {
  if (typeof spec !== "object" || spec === null) return undefined;
  for (const [key, value] of Object.entries(spec)) {
    const found = key.startsWith("geo") ? pointIn(value, key) : pointOutOfRange(value);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** The first point out of range anywhere in a geo operator's operand. */
function pointIn(value: unknown, where: string): string | undefined {
  if (value === null || typeof value === "boolean" || typeof value === "number") return undefined;
  let point: { lat: number; lon: number } | null;
  try {
    point = Koncorde.convertGeopoint(value as string);
  } catch {
    point = null;
  }
  if (point !== null && !(Math.abs(point.lat) <= 90 && Math.abs(point.lon) <= 180)) {
    return `"${where}": a point's latitude is -90 to 90 and its longitude -180 to 180.`;
  }
  if (typeof value === "object") {
    for (const [key, inner] of Object.entries(value)) {
      const found = pointIn(inner, `${where}.${key}`);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/**
 * How many alternatives (ANDs in Koncorde's OR of ANDs) a filter and its negation expand to, each
 * counted up to `cap + 1` (past it the exact number does not matter). An `and` multiplies its
 * operands' alternatives and a `not` swaps a filter's with its negation's (De Morgan); anything
 * that is not a combination counts as one, or as its number of values for `in`. An upper bound:
 * Koncorde may simplify further. Anything malformed counts as one and is Koncorde's to refuse.
 */
export function expansion(spec: unknown, cap: number): { positive: number; negative: number } {
  const limit = cap + 1;
  const sum = (xs: number[]) => Math.min(limit, xs.reduce((a, b) => a + b, 0));
  const product = (xs: number[]) => xs.reduce((a, b) => Math.min(limit, a * b), 1);
  const all = (value: unknown) => (Array.isArray(value) ? value : value === undefined ? [] : [value]).map((each) => expansion(each, cap));
  if (typeof spec !== "object" || spec === null || Array.isArray(spec)) return { positive: 1, negative: 1 };
  const keys = Object.keys(spec);
  if (keys.length !== 1) return { positive: 1, negative: 1 };
  const key = keys[0]!;
  const operand = (spec as Record<string, unknown>)[key];
  switch (key) {
    case "and": {
      const parts = all(operand);
      return { positive: product(parts.map((p) => p.positive)), negative: sum(parts.map((p) => p.negative)) };
    }
    case "or": {
      const parts = all(operand);
      return { positive: sum(parts.map((p) => p.positive)), negative: product(parts.map((p) => p.negative)) };
    }
    case "not": {
      const inner = expansion(operand, cap);
      return { positive: inner.negative, negative: inner.positive };
    }
    case "bool": {
      // must / filter: and; must_not: and of nots; should / should_not: or (of nots).
      const clauses = (typeof operand === "object" && operand !== null ? operand : {}) as Record<string, unknown>;
      const must = [...all(clauses.must), ...all(clauses.filter)];
      const mustNot = all(clauses.must_not).map((p) => ({ positive: p.negative, negative: p.positive }));
      const should = [...all(clauses.should), ...all(clauses.should_not).map((p) => ({ positive: p.negative, negative: p.positive }))];
      const parts = [...must, ...mustNot];
      if (should.length > 0) parts.push({ positive: sum(should.map((p) => p.positive)), negative: product(should.map((p) => p.negative)) });
      return { positive: product(parts.map((p) => p.positive)), negative: sum(parts.map((p) => p.negative)) };
    }
    case "in": {
      const values = typeof operand === "object" && operand !== null ? Object.values(operand as Record<string, unknown>)[0] : undefined;
      const n = Array.isArray(values) ? Math.min(limit, Math.max(1, values.length)) : 1;
      return { positive: n, negative: n };
    }
    default:
      return { positive: 1, negative: 1 };
  }
}

