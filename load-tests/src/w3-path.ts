import { HttpPublisher } from "./http-publisher.js";
import { encodePayload } from "./payload.js";
import { ACCEPTED } from "./publisher.js";
import { RunStats } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import type { DeliveryTracker } from "./stats.js";
import { plateTarget } from "./targets.js";
import { sourceAddress } from "./workload.js";

/** The plate and key the single-node tools start their node with. */
export const PLATE = "bench";
export const KEY = "bench-secret-0123456789abcdefghij";
const CHANNEL = "ch";

/**
 * W3's path on one node, for the tools that count what a publish costs (instructions.ts,
 * cpu-split.ts): `connections` keep-alive HTTP publishers, each with one publish in flight, and one
 * WebSocket subscriber of their channel.
 */
export class W3Path {
  readonly #publishers: HttpPublisher[];
  readonly #seqs: number[];
  readonly #tracker: DeliveryTracker;
  readonly #subscriber: Subscriber;

  private constructor(publishers: HttpPublisher[], tracker: DeliveryTracker, subscriber: Subscriber) {
    this.#publishers = publishers;
    this.#seqs = new Array<number>(publishers.length).fill(0);
    this.#tracker = tracker;
    this.#subscriber = subscriber;
  }

  /** Connects to the node on `port` (process `pid`), which serves `PLATE` with `KEY`. */
  static async open(port: number, pid: number, connections: number): Promise<W3Path> {
    const target = plateTarget({ name: "plate", port, plate: PLATE, key: KEY, pids: [pid] });
    const stats = new RunStats();
    stats.begin(0, performance.now());
    const tracker = stats.tracker(false);
    const publishers = Array.from({ length: connections }, () => new HttpPublisher(target, sourceAddress()));
    try {
      const subscriber = await Subscriber.open(target, "ws", CHANNEL, { tracker, eager: true, localAddress: sourceAddress() });
      return new W3Path(publishers, tracker, subscriber);
    } catch (err) {
      for (const publisher of publishers) publisher.close();
      throw err;
    }
  }

  /** Publishes `total` messages, each publisher one at a time, then waits until the subscriber has them all. */
  async publish(total: number): Promise<void> {
    const before = this.#tracker.received;
    let sent = 0;
    await Promise.all(
      this.#publishers.map(async (publisher, p) => {
        while (sent < total) {
          sent++;
          const outcome = await publisher.publish(CHANNEL, encodePayload(this.#seqs[p]!++, p, performance.now()));
          if (outcome !== ACCEPTED) throw new Error(`publish refused: ${outcome}`);
        }
      }),
    );
    while (this.#tracker.received - before < total) await new Promise((r) => setTimeout(r, 50));
  }

  close(): void {
    this.#subscriber.close();
    for (const publisher of this.#publishers) publisher.close();
  }
}
