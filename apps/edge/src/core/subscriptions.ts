import { toPlateError } from "@plate/protocol";
import type { ChannelName } from "@plate/protocol";
import type { Broker, Replay, Retention } from "@plate/broker";
import type { Connection } from "./connection.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { ConnectionSlot, Connections } from "./connections.js";
import type { Fanout } from "./fanout.js";

/**
 * Opens a subscription for an authorized connection, whatever its transport: registers it (the
 * per-plate limit), subscribes it in the fan-out, reads the channel's history, then sends `ready`
 * (with the position to resume from), what the client missed (or `reset`), and starts its
 * `max_dur` clock. It never throws: a connection that cannot open is ended with the error's code,
 * which its transport turns into an HTTP answer or a close frame.
 *
 * Resume without gap or duplicate: the fan-out subscription is active before the history is read,
 * so a message published meanwhile is both in the history and waiting in the connection, or (on
 * Redis, where the read's answer can overtake live messages sent on the subscriber connection) in
 * the history and still on its way; the connection drops live messages at or before the last one
 * replayed, whenever they arrive (`Connection.deliver`).
 */
export class Subscriptions {
  constructor(
    private readonly connections: Connections,
    private readonly fanout: Fanout,
    private readonly broker: Broker,
    private readonly retention: Retention,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /**
   * `since`: the last id the client saw (`Last-Event-ID`, `since`), to resume after it.
   * `requestId`: the request that opened it, for the log.
   * `slot`: a connection slot of its plate held for it (`Connections.reserve`), which it takes over.
   */
  async open(conn: Connection, maxDurationMs = 0, since?: string, requestId?: string, slot?: ConnectionSlot): Promise<void> {
    const { topic } = conn;
    const started = Date.now();
    conn.onEnd((reason) =>
      this.log.debug("subscription ended", {
        requestId,
        plateId: conn.plateId,
        transport: conn.transport,
        pattern: topic.pattern,
        reason,
        seconds: Math.round((Date.now() - started) / 1000),
      }),
    );
    let replay: Replay;
    try {
      this.connections.add(conn, slot);
      await this.fanout.attach(conn);
      if (conn.ended) return;
      if (topic.pattern) {
        // A pattern has no one channel history to replay: only the plate's head is read (under the
        // pattern's text, a channel that never has a history).
        const { head } = await this.broker.history(topic.plateId, topic.channel as string as ChannelName, undefined, this.retention);
        replay = since === undefined ? { complete: true, messages: [], head } : { complete: false, reason: "pattern", head };
      } else {
        replay = await this.broker.history(topic.plateId, topic.channel, since, this.retention);
      }
    } catch (err) {
      const error = toPlateError(err);
      conn.end(error.code, error.message);
      return;
    }
    if (conn.ended) return;
    this.fanout.started(topic, replay.head);
    if (!replay.complete) this.metrics.resets.inc({ reason: replay.reason });
    conn.start({ type: "ready", clientId: conn.clientId, channel: topic.channel, pattern: topic.pattern, position: replay.head }, replay, since);
    if (maxDurationMs > 0) {
      const timer = setTimeout(() => conn.end("max_duration_reached"), maxDurationMs);
      conn.onEnd(() => clearTimeout(timer));
    }
  }
}
