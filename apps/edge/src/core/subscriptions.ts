import { toPlateError } from "@plate/protocol";
import type { Connection } from "./connection.js";
import type { Connections } from "./connections.js";
import type { Fanout } from "./fanout.js";

/**
 * Opens a subscription for an authorized connection, whatever its transport: registers it (the
 * per-plate limit), subscribes it in the fan-out, then sends `ready` and starts its `max_dur`
 * clock. It never throws: a connection that cannot open is ended with the error's code, which
 * its transport turns into an HTTP answer or a close frame.
 */
export class Subscriptions {
  constructor(
    private readonly connections: Connections,
    private readonly fanout: Fanout,
  ) {}

  async open(conn: Connection, maxDurationMs = 0): Promise<void> {
    try {
      this.connections.add(conn);
      await this.fanout.attach(conn);
    } catch (err) {
      const error = toPlateError(err);
      conn.end(error.code, error.message);
      return;
    }
    if (conn.ended) return;
    conn.start({ type: "ready", clientId: conn.clientId, channel: conn.topic.channel, pattern: conn.topic.pattern });
    if (maxDurationMs > 0) {
      const timer = setTimeout(() => conn.end("max_duration_reached"), maxDurationMs);
      conn.onEnd(() => clearTimeout(timer));
    }
  }
}
