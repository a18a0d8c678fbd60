/**
 * Types for the xk6-sse extension (https://github.com/phymbert/xk6-sse), which @types/k6 does not
 * cover: stock k6 has no streaming HTTP client, so SSE subscribers need a k6 binary built with
 * `xk6 build --with github.com/phymbert/xk6-sse`.
 *
 * Shape read from the extension's `sse.go` (v0.1.x), not from published types:
 * `sse.open(url, params, (client) => { client.on("event", (e) => ...) })` blocks the VU until the
 * stream ends, `client.close()` is called, or the VU is interrupted (end of the scenario's
 * `maxDuration`). The client has no timers. Every blank-line-terminated block is one `event`,
 * including a comment-only block such as Plate's `: ping` (then `data` is "" and `comment` is set).
 */
declare module "k6/x/sse" {
  import type { CookieJar } from "k6/http";

  /** The second argument of `sse.open`; every field is optional. */
  export interface SseParams {
    /** Default "GET". */
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    tags?: Record<string, string>;
    jar?: CookieJar;
  }

  /** One server-sent event; a field the block did not carry is "". */
  export interface SseEvent {
    id: string;
    /** The `event:` name; "" for an unnamed event. */
    name: string;
    /** The `data:` lines joined, trailing newlines removed. */
    data: string;
    /** The text of a `:` comment line. */
    comment: string;
  }

  /** What an `error` handler receives (a wrapped Go error). */
  export interface SseError {
    error(): string;
  }

  /** The handle passed to the setup callback of `sse.open`. */
  export interface SseClient {
    on(event: "open", handler: () => void): void;
    on(event: "event", handler: (event: SseEvent) => void): void;
    on(event: "error", handler: (error: SseError) => void): void;
    /** Ends the stream; `sse.open` then returns. */
    close(): void;
  }

  /** What `sse.open` returns once the stream has ended. `status` is 0 when the request failed. */
  export interface SseResponse {
    url: string;
    status: number;
    headers: Record<string, string>;
    error: string;
  }

  /** The module object (the extension has only a default export). */
  export interface SseModule {
    open(url: string, params: SseParams | null, setup: (client: SseClient) => void): SseResponse;
  }

  const sse: SseModule;
  export default sse;
}

/**
 * k6's CommonJS `require`, callable in the init context only. Typed for the one module these scripts
 * load on demand: a static `import` of "k6/x/sse" would make every run, WebSocket ones included,
 * fail on a stock k6 binary ("unknown module"). k6 returns a Go module's default export as is when
 * the module has no named exports, which is the case for xk6-sse.
 */
declare function require(id: "k6/x/sse"): import("k6/x/sse").SseModule;
