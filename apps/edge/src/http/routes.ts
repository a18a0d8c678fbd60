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

/** A route's path as segments: a literal, or (`param`) a parameter's name. */
interface Segment {
  readonly text: string;
  readonly param: boolean;
}

const SEGMENTS = new Map(
  ROUTES.map((route) => [route, route.path.split("/").slice(1).map((part): Segment => (part.startsWith(":") ? { text: part.slice(1), param: true } : { text: part, param: false }))]),
);

/** The most segments a route has: the bounds `matchRoute` records. */
const MOST_SEGMENTS = Math.max(...[...SEGMENTS.values()].map((segments) => segments.length));
/** Where each segment of the path being matched starts and ends (`matchRoute` is synchronous). */
const BOUNDS = new Int32Array(2 * MOST_SEGMENTS);

/**
 * The route of `method` and `pathname` (no query), or undefined. What comes before the first `/`
 * is not a segment, and a trailing `/` is ignored, as Hono ignores it. Segments are
 * percent-decoded when they hold escapes, and kept as sent when those are not valid (a
 * parameter's validation then refuses it), as Hono's params are.
 * `which` must be a module-level function: its routes are worked out once and kept by it.
 */
export function matchRoute(method: string, pathname: string, which: (route: Route) => boolean = anyRoute): Matched | undefined {
  // Called on every publish: the path is read in place (no split, no array of segments), and a
  // segment is sliced only as a parameter of the route that matched, decoded only when it holds
  // an escape (literals too: `/acme/%73/<token>` is route 5, as Hono matches).
  const first = pathname.indexOf("/");
  if (first < 0) return undefined;
  let end = pathname.length;
  if (end - 1 > first && pathname.charCodeAt(end - 1) === SLASH) end--;
  for (const [route, segments] of candidates(method, which)) {
    let at = first + 1;
    let i = 0;
    for (; i < segments.length; i++) {
      let stop = pathname.indexOf("/", at);
      if (stop < 0 || stop > end) stop = end;
      // The last segment runs to the end; every other one stops at a `/` before it.
      if ((i === segments.length - 1) !== (stop === end)) break;
      const segment = segments[i]!;
      if (segment.param ? stop === at : !sameSegment(segment.text, pathname, at, stop)) break;
      BOUNDS[2 * i] = at;
      BOUNDS[2 * i + 1] = stop;
      at = stop + 1;
    }
    if (i < segments.length) continue;
    const params: Record<string, string> = {};
    for (let j = 0; j < segments.length; j++) {
      const segment = segments[j]!;
      if (segment.param) params[segment.text] = decode(pathname.slice(BOUNDS[2 * j], BOUNDS[2 * j + 1]));
    }
    return { route, params };
  }
  return undefined;
}

/** Whether `pathname` from `at` to `stop` is the literal `text`, as sent or percent-decoded. */
function sameSegment(text: string, pathname: string, at: number, stop: number): boolean {
  if (stop - at === text.length && pathname.startsWith(text, at)) return true;
  const part = pathname.slice(at, stop);
  return part.includes("%") && decode(part) === text;
}

const SLASH = "/".charCodeAt(0);

function anyRoute(): boolean {
  return true;
}

/** The routes (with their segments) a filter takes, by method: filters are module constants. */
const CANDIDATES = new WeakMap<(route: Route) => boolean, Map<string, readonly (readonly [Route, readonly Segment[]])[]>>();

/** The routes of `method` that `which` takes, worked out once per filter and method. */
function candidates(method: string, which: (route: Route) => boolean): readonly (readonly [Route, readonly Segment[]])[] {
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
