import { WebSocket } from "ws";
import { PlateClient } from "@plate/client";
import type {
  ConnectionState,
  Envelope,
  PlateClientError,
  RealtimeOptions,
  RealtimeReady,
  RealtimeReset,
  SubscriptionName,
  WebSocketConstructor,
} from "@plate/client";

import { KEYS } from "./support.js";

/**
 * What the realtime tests of @plate/client watch: what one subscription hands over (`Seen`), and
 * what one connection says and opens (`Watched`).
 */

/** Reconnect delays short enough for tests. */
export const QUICK_RECONNECT = { initialDelayMs: 50, maxDelayMs: 200 };

/** What one subscription hands over. */
export class Seen<T = unknown> {
  readonly messages: Envelope<T>[] = [];
  readonly resets: RealtimeReset[] = [];
  readonly errors: PlateClientError[] = [];
  subscribed = 0;
  readonly handler = (envelope: Envelope<T>) => void this.messages.push(envelope);
  readonly options = {
    onSubscribed: () => void (this.subscribed += 1),
    onReset: (reset: RealtimeReset) => void this.resets.push(reset),
    onError: (error: PlateClientError) => void this.errors.push(error),
  };

  /** The published values, of one channel only when `channel` is given. */
  values(channel?: string): T[] {
    return this.messages.filter((m) => channel === undefined || m.channel === channel).map((m) => m.message);
  }
}

/**
 * What one realtime connection says, and what its client opened: every WebSocket constructed or
 * SSE stream requested (`attempts`), those the server took (`opened`), and for WebSockets the
 * most open at once.
 */
export class Watched {
  readonly states: ConnectionState[] = [];
  readonly errors: PlateClientError[] = [];
  readonly readies: RealtimeReady[] = [];
  /** Every envelope that arrived (`onMessage`), with the subscriptions it went to. */
  readonly arrivals: { channel: string; message: unknown; to: string[] }[] = [];
  attempts = 0;
  opened = 0;
  /** Every WebSocket the client constructed, oldest first: a test ends one (`terminate()`) to force a reconnect. */
  readonly sockets: WebSocket[] = [];
  #open = 0;
  maxOpen = 0;
  readonly WebSocket: WebSocketConstructor;
  readonly fetch: typeof fetch;

  constructor() {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const watched = this;
    this.WebSocket = class extends WebSocket {
      constructor(url: string) {
        super(url);
        watched.attempts += 1;
        watched.sockets.push(this);
        let open = false;
        this.on("open", () => {
          open = true;
          watched.opened += 1;
          watched.#open += 1;
          watched.maxOpen = Math.max(watched.maxOpen, watched.#open);
        });
        this.on("close", () => {
          if (open) watched.#open -= 1;
        });
      }
    };
    this.fetch = async (input, init) => {
      const url = input instanceof Request ? input.url : input;
      const stream = (init?.method ?? "GET") === "GET" && /\/(realtime|s\/[^/]+)$/.test(new URL(url).pathname);
      if (stream) watched.attempts += 1;
      const res = await fetch(input, init);
      if (stream && res.ok && res.headers.get("content-type")?.startsWith("text/event-stream")) watched.opened += 1;
      return res;
    };
  }

  options(transport: "sse" | "ws"): RealtimeOptions {
    return {
      transport,
      reconnect: QUICK_RECONNECT,
      onReady: (ready) => void this.readies.push(ready),
      onStateChange: (state) => void this.states.push(state),
      onError: (error) => void this.errors.push(error),
      onMessage: (envelope, delivered) =>
        void this.arrivals.push({
          channel: envelope.channel,
          message: envelope.message,
          to: delivered.map((s) => text(s.name)),
        }),
    };
  }

  client(url: string, key: string = KEYS.acme): PlateClient {
    return new PlateClient({ url, plate: "acme", key, WebSocket: this.WebSocket, fetch: this.fetch });
  }
}

export function text(name: SubscriptionName): string {
  return name.channel ?? name.pattern;
}
