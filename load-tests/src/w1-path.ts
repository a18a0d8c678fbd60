import { HttpPublisher } from "./http-publisher.js";
import { encodePayload } from "./payload.js";
import { ACCEPTED } from "./publisher.js";
import { RunStats } from "./stats.js";
import { Subscriber } from "./subscriber.js";
import type { DeliveryTracker } from "./stats.js";
import { plateTarget } from "./targets.js";
import { sourceAddress } from "./workload.js";
import { KEY, PLATE } from "./w3-path.js";

const CHANNEL = "w1";
/**
 * The pause after each publish, in ms: W1 publishes a message at a time (100 a second), so each
 * one's fan-out runs in a turn of its own; under valgrind a fan-out to 200 subscribers takes
 * several ms.
 */
const PACE_MS = 20;

/**
 * W1's path on one node, for instructions.ts: one keep-alive HTTP publisher, and `subscribers`
 * subscribers of its channel over one transport, each message published alone.
 */
export class W1Path {
  readonly #publisher: HttpPublisher;
  readonly #subscribers: Subscriber[];
  readonly #trackers: DeliveryTracker[];
  #seq = 0;

  private constructor(publisher: HttpPublisher, subscribers: Subscriber[], trackers: DeliveryTracker[]) {
    this.#publisher = publisher;
    this.#subscribers = subscribers;
    this.#trackers = trackers;
  }

  /** Connects `subscribers` subscribers (`transport`) and a publisher to the node on `port` (process `pid`), which serves `PLATE` with `KEY`. */
  static async open(port: number, pid: number, transport: "ws" | "sse", subscribers: number): Promise<W1Path> {
    const target = plateTarget({ name: "plate", port, plate: PLATE, key: KEY, pids: [pid] });
    const stats = new RunStats();
    stats.begin(0, performance.now());
    const opened: Subscriber[] = [];
    const trackers: DeliveryTracker[] = [];
    const publisher = new HttpPublisher(target, sourceAddress());
    try {
      for (let i = 0; i < subscribers; i++) {
        const tracker = stats.tracker(false);
        trackers.push(tracker);
        opened.push(await Subscriber.open(target, transport, CHANNEL, { tracker, eager: true, localAddress: sourceAddress() }));
      }
    } catch (err) {
      for (const subscriber of opened) subscriber.close();
      publisher.close();
      throw err;
    }
    return new W1Path(publisher, opened, trackers);
  }

  /** Publishes `total` messages, one at a time `PACE_MS` apart, then waits until every subscriber has them all. */
  async publish(total: number): Promise<void> {
    const before = this.#trackers.map((t) => t.received);
    for (let i = 0; i < total; i++) {
      const outcome = await this.#publisher.publish(CHANNEL, encodePayload(this.#seq++, 0, performance.now()));
      if (outcome !== ACCEPTED) throw new Error(`publish refused: ${outcome}`);
      await new Promise((r) => setTimeout(r, PACE_MS));
    }
    while (this.#trackers.some((t, i) => t.received - before[i]! < total)) await new Promise((r) => setTimeout(r, 50));
  }

  close(): void {
    for (const subscriber of this.#subscribers) subscriber.close();
    this.#publisher.close();
  }
}
