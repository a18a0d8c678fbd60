import { PlateError, readJsonObject } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import type { Broker, Unsubscribe } from "@plate/broker";
import { nanoid } from "nanoid";
import type { Logger } from "../log.js";
import type { Connections } from "./connections.js";

/** Every node listens here for occupancy questions. */
const ASK_ADDRESS = "occupancy";
/** Channels one answer names at most (a node's, and the route's): the rest are left out, and `truncated` says so. */
export const MAX_OCCUPANCY_CHANNELS = 10_000;

/** One channel with subscribers, and how many connections subscribe to it. */
export interface Occupied {
  readonly channel: string;
  readonly connections: number;
}

/** A question this node put to every node: the sums so far, and how many answers it waits for. */
interface Question {
  readonly totals: Map<string, number>;
  heard: number;
  expected: number;
  readonly check: () => void;
}

type Note =
  | { readonly t: "ask"; readonly id: string; readonly from: string; readonly plateId: string; readonly prefix: string }
  | { readonly t: "tell"; readonly id: string; readonly channels: [string, number][] };

/**
 * Route 10's occupancy: the channels of a plate with at least one subscriber, and their connection
 * counts, over every node. Nothing is kept in Redis: the node asked puts the question to every node
 * (`Broker.send` to one address all nodes listen to, which answers how many heard it), each answers
 * from its own connections, and the answers are summed. Exact for what is connected when the
 * nodes answer; a dead node answers nothing and counts nothing.
 */
export class Occupancy {
  readonly #waiting = new Map<string, Question>();
  #stops: Unsubscribe[] = [];

  constructor(
    private readonly broker: Broker,
    private readonly connections: Connections,
    private readonly nodeId: string,
    /** How long to wait for every node's answer (`REALTIME_CHANGE_TIMEOUT_MS`). */
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {}

  async listen(): Promise<void> {
    this.#stops = await Promise.all([
      this.broker.listen(ASK_ADDRESS, (payload) => this.#onNote(payload)),
      this.broker.listen(this.#answers, (payload) => this.#onNote(payload)),
    ]);
  }

  async close(): Promise<void> {
    await Promise.all(this.#stops.map((stop) => stop()));
  }

  /**
   * The plate's channels starting with `prefix` that have subscribers on any node, by name. Throws
   * `broker_unavailable` when a node does not answer within the timeout.
   */
  async of(plateId: PlateId, prefix: string): Promise<{ channels: Occupied[]; truncated: boolean }> {
    const id = nanoid();
    let finish = (): void => undefined;
    const question: Question = { totals: new Map(), heard: 0, expected: Number.POSITIVE_INFINITY, check: () => question.heard >= question.expected && finish() };
    let timer: NodeJS.Timeout | undefined;
    const answered = new Promise<void>((resolve, reject) => {
      finish = resolve;
      timer = setTimeout(() => reject(new PlateError("broker_unavailable", "Not every node answered in time; retry.", { retryAfterS: 1 })), this.timeoutMs);
    });
    this.#waiting.set(id, question);
    try {
      question.expected = await this.broker.send(ASK_ADDRESS, JSON.stringify({ t: "ask", id, from: this.#answers, plateId, prefix } satisfies Note));
      question.check();
      await answered;
    } finally {
      clearTimeout(timer);
      this.#waiting.delete(id);
    }
    const sorted = [...question.totals].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    const truncated = sorted.length > MAX_OCCUPANCY_CHANNELS;
    return { channels: sorted.slice(0, MAX_OCCUPANCY_CHANNELS).map(([channel, connections]) => ({ channel, connections })), truncated };
  }

  get #answers(): string {
    return `${this.nodeId}.occupancy`;
  }

  /** This node's connections per channel of `plateId` starting with `prefix` (pattern subscriptions are not channels). */
  #local(plateId: PlateId, prefix: string): [string, number][] {
    const counts = new Map<string, number>();
    for (const conn of this.connections.ofPlate(plateId)) {
      for (const sub of conn.subscriptions.values()) {
        if (sub.topic.pattern || !sub.topic.channel.startsWith(prefix)) continue;
        if (counts.size >= MAX_OCCUPANCY_CHANNELS && !counts.has(sub.topic.channel)) continue;
        counts.set(sub.topic.channel, (counts.get(sub.topic.channel) ?? 0) + 1);
      }
    }
    return [...counts];
  }

  /** A question or an answer from a node; anything malformed is ignored. */
  #onNote(payload: string): void {
    const note = readJsonObject(payload);
    if (note === undefined || typeof note.id !== "string") return;
    if (note.t === "tell") {
      const question = this.#waiting.get(note.id);
      if (question === undefined || !Array.isArray(note.channels)) return;
      for (const entry of note.channels as unknown[]) {
        if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "number") continue;
        question.totals.set(entry[0], (question.totals.get(entry[0]) ?? 0) + entry[1]);
      }
      question.heard += 1;
      question.check();
      return;
    }
    if (note.t !== "ask" || typeof note.from !== "string" || typeof note.plateId !== "string" || typeof note.prefix !== "string") return;
    const answer: Note = { t: "tell", id: note.id, channels: this.#local(note.plateId as PlateId, note.prefix) };
    this.broker.send(note.from, JSON.stringify(answer)).catch((err: unknown) => this.log.warn("occupancy answer not sent", { error: String(err) }));
  }
}
