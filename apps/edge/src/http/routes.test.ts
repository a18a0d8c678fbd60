import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ROUTES, matchRoute } from "./routes.js";
import type { Route } from "./routes.js";

/** A parameter's value: anything a client may put in a segment, escapes and stray `%` included. */
const paramValue = fc.string({ minLength: 1, maxLength: 12, unit: fc.constantFrom(..."aZ09-_.~:@%é/ ") }).filter((v) => v !== "." && v !== "..");

/** `route`'s path with `values` in its parameters (percent-encoded: a `/` in a value stays in its segment). */
function pathOf(route: Route, values: readonly string[], encodeLiterals: boolean): string {
  let next = 0;
  return route.path.replace(/[^/]+/g, (part) =>
    part.startsWith(":") ? encodeURIComponent(values[next++]!) : encodeLiterals ? [...part].map((ch) => "%" + ch.charCodeAt(0).toString(16)).join("") : part,
  );
}

function paramNames(route: Route): string[] {
  return route.path
    .split("/")
    .filter((part) => part.startsWith(":"))
    .map((part) => part.slice(1));
}

describe("matchRoute", () => {
  it("finds every route from its path, with its parameters decoded, whatever they hold", () => {
    fc.assert(
      fc.property(fc.constantFrom(...ROUTES), fc.array(paramValue, { minLength: 3, maxLength: 3 }), fc.boolean(), fc.boolean(), (route, values, slash, encodeLiterals) => {
        const names = paramNames(route);
        for (const method of route.methods) {
          const found = matchRoute(method, pathOf(route, values, encodeLiterals) + (slash ? "/" : ""));
          expect(found?.route).toBe(route);
          expect(found?.params).toEqual(Object.fromEntries(names.map((name, i) => [name, values[i]])));
        }
      }),
      { numRuns: 500 },
    );
  });

  it("finds nothing for a path with a segment too many or too few, an empty parameter, or another method", () => {
    expect(matchRoute("POST", "/acme/pubsub/news/publish")?.route.name).toBe("publish");
    expect(matchRoute("POST", "/acme/pubsub/news/publish/")?.route.name).toBe("publish");
    expect(matchRoute("POST", "/acme/pubsub/news/publish//")).toBeUndefined();
    expect(matchRoute("POST", "/acme/pubsub/news/publish/x")).toBeUndefined();
    expect(matchRoute("POST", "/acme/pubsub/publish")).toBeUndefined();
    expect(matchRoute("POST", "/acme/pubsub//publish")).toBeUndefined();
    expect(matchRoute("POST", "//pubsub/news/publish")).toBeUndefined();
    expect(matchRoute("GET", "/acme/pubsub/news/publish")).toBeUndefined();
    expect(matchRoute("POST", "acme/pubsub/news/publish")).toBeUndefined();
    expect(matchRoute("GET", "/")).toBeUndefined();
    expect(matchRoute("GET", "")).toBeUndefined();
  });

  it("keeps a segment whose escape is not valid as sent, and reads an escaped literal as the literal", () => {
    expect(matchRoute("POST", "/ac%zz/pubsub/news/publish")?.params).toEqual({ plateId: "ac%zz", channel: "news" });
    expect(matchRoute("GET", "/acme/%73/tok%2")).toEqual({ route: ROUTES.find((r) => r.name === "connectToken"), params: { plateId: "acme", token: "tok%2" } });
    expect(matchRoute("GET", "/acme/%zz/tok")).toBeUndefined();
  });

  it("takes only the routes a filter takes", () => {
    const publishOnly = (route: Route) => route.name === "publish";
    expect(matchRoute("POST", "/acme/publish/news", publishOnly)).toBeUndefined();
    expect(matchRoute("POST", "/acme/publish/news")?.route.name).toBe("publishLegacy");
    expect(matchRoute("POST", "/acme/pubsub/news/publish", publishOnly)?.params).toEqual({ plateId: "acme", channel: "news" });
  });
});
