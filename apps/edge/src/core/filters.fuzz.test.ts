import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PlateError } from "@plate/protocol";
import { Filters, expansion, filterDocument } from "./filters.js";

/**
 * The filter engine against hostile filters: whatever a client sends as a filter, compiling it
 * answers a filter or refuses it with `invalid_filter` / `payload_too_large` (never anything else,
 * never a stall: a filter whose and/or/not would expand past the cap is refused before Koncorde
 * rewrites it), and a compiled filter tests any document without throwing.
 */

const CASES = Number(process.env.FUZZ_CASES ?? 800);
const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const MAX_CONDITIONS = 50;

const field = fc.constantFrom("a", "b", "c.d", "status", "_event", "_value", "");
const scalar = fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null));
const leaf = fc.oneof(
  fc.record({ equals: fc.dictionary(field, scalar, { maxKeys: 2 }) }),
  fc.record({ in: fc.dictionary(field, fc.array(scalar, { maxLength: 6 }), { maxKeys: 2 }) }),
  fc.record({ range: fc.dictionary(field, fc.dictionary(fc.constantFrom("gt", "gte", "lt", "lte", "eq"), scalar, { maxKeys: 3 }), { maxKeys: 1 }) }),
  fc.record({ exists: fc.oneof(field, fc.record({ field })) }),
  fc.record({ missing: field }),
  fc.record({ regexp: fc.dictionary(field, fc.record({ value: fc.constantFrom("^a", "(a+)+$", "[", "a{2,}", "\\d"), flags: fc.constantFrom("i", "g", "") }), { maxKeys: 1 }) }),
  fc.record({ geoDistance: fc.record({ p: fc.oneof(fc.record({ lat: fc.double(), lon: fc.double() }), fc.tuple(fc.double(), fc.double()), fc.string({ maxLength: 12 })), distance: fc.constantFrom("1km", "x", "20000km", "-1m") }) }),
  fc.record({ geoDistanceRange: fc.record({ p: fc.record({ lat: fc.double({ min: -90, max: 90 }), lon: fc.double({ min: -180, max: 180 }) }), from: fc.constantFrom("1m", "10km"), to: fc.constantFrom("2m", "20000km", "1km") }) }),
  fc.record({ geoBoundingBox: fc.record({ p: fc.record({ top: fc.double(), left: fc.double(), bottom: fc.double(), right: fc.double() }) }) }),
  fc.record({ geoPolygon: fc.record({ p: fc.record({ points: fc.array(fc.tuple(fc.double(), fc.double()), { maxLength: 5 }) }) }) }),
  fc.jsonValue({ maxDepth: 2 }),
);
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leaf,
    fc.record({ and: fc.array(tie("tree"), { maxLength: 6 }) }),
    fc.record({ or: fc.array(tie("tree"), { maxLength: 6 }) }),
    fc.record({ not: tie("tree") }),
    fc.record({ bool: fc.record({ must: fc.array(tie("tree"), { maxLength: 3 }), should: fc.array(tie("tree"), { maxLength: 3 }), must_not: fc.array(tie("tree"), { maxLength: 3 }) }, { requiredKeys: [] }) }),
  ),
}));

describe("filters with hostile input", () => {
  it("compiles a filter or refuses it with invalid_filter / payload_too_large, and tests any document with a compiled one", () => {
    const filters = new Filters({ maxBytes: 4096, maxConditions: MAX_CONDITIONS, perPlate: 1_000_000 });
    fc.assert(
      fc.property(fc.oneof(tree, fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue())), fc.jsonValue(), (spec, message) => {
        let compiled;
        try {
          compiled = filters.compile([spec as Record<string, unknown>], "fuzz");
        } catch (err) {
          expect(err).toBeInstanceOf(PlateError);
          expect(["invalid_filter", "payload_too_large"]).toContain((err as PlateError).code);
          return;
        }
        filters.hold(compiled);
        const matched = filters.test(filterDocument(JSON.stringify(message), "e"), "fuzz");
        expect(Array.isArray(matched)).toBe(true);
        filters.letGo(compiled);
      }),
      { numRuns: CASES, ...(seed === undefined ? {} : { seed }) },
    );
    expect(filters.stored).toBe(0);
  });

  it("bounds the expansion of any and/or/not nesting before Koncorde sees it", () => {
    const pairs = (n: number) => ({ and: Array.from({ length: n }, (_, i) => ({ or: [{ equals: { [`a${i}`]: 1 } }, { equals: { [`b${i}`]: 1 } }] })) });
    expect(expansion(pairs(5), MAX_CONDITIONS).positive).toBe(32);
    expect(expansion(pairs(40), MAX_CONDITIONS).positive).toBe(MAX_CONDITIONS + 1);
    expect(expansion({ not: { or: [{ and: [{ equals: { a: 1 } }, { equals: { b: 1 } }] }, { and: [{ equals: { c: 1 } }, { equals: { d: 1 } }] }] } }, MAX_CONDITIONS).positive).toBe(4);
    const filters = new Filters({ maxBytes: 4096, maxConditions: MAX_CONDITIONS, perPlate: 10 });
    expect(() => filters.compile([pairs(40)], "x")).toThrow(expect.objectContaining({ code: "invalid_filter" }));
    expect(filters.compile([pairs(5)], "x").id).toMatch(/./);
  });
});
