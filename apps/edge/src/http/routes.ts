/**
 * The one route table of an edge node: every route of the spec, by name, with its methods and
 * path. Hono registers its handlers from it (app.ts), the publish fast path matches it before Hono
 * (publish.ts), and the WebSocket upgrade matches it (upgrade.ts): a new route is one row here,
 * and whoever serves it looks it up by name. (The admin API and the console are mounted sub-apps
 * with their own small tables: operator routes, not the spec's.)
 */

/** What a route does; its handler is looked up by this name. */
export type RouteName =
  | "healthz"
  | "readyz"
  | "metrics"
  | "publish"
  | "publishLegacy"
  | "publishBatch"
  | "subscribeSse"
  | "subscribeSseLegacy"
  | "subscribeWs"
  | "subscribeWsLegacy"
  | "clientToken"
  | "connectToken"
  | "realtime"
  | "realtimeChange"
  | "presence"
  | "occupancy";

export interface Route {
  readonly name: RouteName;
  /** The spec's route number, for the docs (0: operation routes). */
  readonly spec: number;
  readonly methods: readonly ("GET" | "POST")[];
  /** Hono's syntax: `:name` captures one segment. */
  readonly path: string;
  /** Whether a WebSocket upgrade of it is served (`only`: nothing else is). */
  readonly upgrade: false | "also" | "only";
}

export const ROUTES: readonly Route[] = [
  { name: "healthz", spec: 0, methods: ["GET"], path: "/healthz", upgrade: false },
  { name: "readyz", spec: 0, methods: ["GET"], path: "/readyz", upgrade: false },
  { name: "metrics", spec: 0, methods: ["GET"], path: "/metrics", upgrade: false },
  { name: "publish", spec: 1, methods: ["POST"], path: "/:plateId/pubsub/:channel/publish", upgrade: false },
  { name: "subscribeSse", spec: 2, methods: ["GET"], path: "/:plateId/pubsub/:channel/subscribe", upgrade: false },
  { name: "subscribeWs", spec: 3, methods: ["GET"], path: "/:plateId/pubsub/:channel/ws", upgrade: "only" },
  { name: "clientToken", spec: 4, methods: ["GET", "POST"], path: "/:plateId/pubsub/:channel/client", upgrade: false },
  { name: "connectToken", spec: 5, methods: ["GET"], path: "/:plateId/s/:token", upgrade: "also" },
  { name: "publishLegacy", spec: 6, methods: ["POST"], path: "/:plateId/publish/:channel", upgrade: false },
  { name: "publishBatch", spec: 12, methods: ["POST"], path: "/:plateId/publish", upgrade: false },
  { name: "subscribeSseLegacy", spec: 7, methods: ["GET"], path: "/:plateId/subscribe/:channel", upgrade: false },
  { name: "subscribeWsLegacy", spec: 8, methods: ["GET"], path: "/:plateId/ws/subscribe/:channel", upgrade: "only" },
  { name: "realtime", spec: 9, methods: ["GET"], path: "/:plateId/realtime", upgrade: "also" },
  { name: "realtimeChange", spec: 9, methods: ["POST"], path: "/:plateId/realtime/:clientId", upgrade: false },
  { name: "presence", spec: 10, methods: ["GET"], path: "/:plateId/pubsub/:channel/presence", upgrade: false },
  { name: "occupancy", spec: 10, methods: ["GET"], path: "/:plateId/channels", upgrade: false },
];

/** A route matched, with its path parameters percent-decoded. */
export interface Matched {
  readonly route: Route;
  readonly params: Readonly<Record<string, string>>;
}

/** Each route's path as segments: a literal, or a parameter's name after `:`. */
const SEGMENTS = new Map(ROUTES.map((route) => [route, route.path.split("/").slice(1)]));

/**
 * The route of `method` and `pathname` (no query), or undefined. A trailing `/` is ignored, as
 * Hono ignores it. Segments are percent-decoded when they hold escapes, and kept as sent when
 * those are not valid (a parameter's validation then refuses it), as Hono's params are.
 * `which` must be a module-level function: its routes are worked out once and kept by it.
 */
export function matchRoute(method: string, pathname: string, which: (route: Route) => boolean = anyRoute): Matched | undefined {
  // Called on every publish: no array of decoded segments, no closure; a segment is decoded only
  // when it holds an escape (literals too: `/acme/%73/<token>` is route 5, as Hono matches).
  const parts = pathname.split("/");
  const last = parts.length > 2 && parts[parts.length - 1] === "" ? parts.length - 1 : parts.length;
  for (const [route, segments] of candidates(method, which)) {
    if (segments.length !== last - 1) continue;
    let matched = true;
    for (let i = 0; i < segments.length && matched; i++) {
      const segment = segments[i]!;
      const part = parts[i + 1]!;
      if (segment.charCodeAt(0) === COLON) matched = part !== "";
      else matched = segment === part || (part.includes("%") && segment === decode(part));
    }
    if (!matched) continue;
    const params: Record<string, string> = {};
    for (let i = 0; i < segments.length; i++) {
      const segment = segments[i]!;
      if (segment.charCodeAt(0) === COLON) params[segment.slice(1)] = decode(parts[i + 1]!);
    }
    return { route, params };
  }
  return undefined;
}

const COLON = ":".charCodeAt(0);

function anyRoute(): boolean {
  return true;
}

/** The routes (with their segments) a filter takes, by method: filters are module constants. */
const CANDIDATES = new WeakMap<(route: Route) => boolean, Map<string, readonly (readonly [Route, readonly string[]])[]>>();

/** The routes of `method` that `which` takes, worked out once per filter and method. */
function candidates(method: string, which: (route: Route) => boolean): readonly (readonly [Route, readonly string[]])[] {
  let byMethod = CANDIDATES.get(which);
  if (byMethod === undefined) {
    byMethod = new Map();
    CANDIDATES.set(which, byMethod);
  }
  let found = byMethod.get(method);
  if (found === undefined) {
    found = ROUTES.filter((route) => route.methods.includes(method as "GET") && which(route)).map((route) => [route, SEGMENTS.get(route)!] as const);
    // Methods come from clients: only the two the table uses are kept.
    if (method === "GET" || method === "POST") byMethod.set(method, found);
  }
  return found;
}

/** A path segment as sent, or percent-decoded when it holds escapes. */
function decode(segment: string): string {
  if (!segment.includes("%")) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
