import { PlateError } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import { USAGE_COUNTERS } from "@plate/store";
import type { Store, UsageAdd, UsageCounter, UsageHour } from "@plate/store";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";

/** Metering settings (see config.ts). */
export interface UsageSettings {
  /** `USAGE_FLUSH_MS`: how often a node adds what it counted to the store. */
  readonly flushMs: number;
  /** `USAGE_KEEP_DAYS`: how long an hour's figures are kept. */
  readonly keepDays: number;
}

/** Plates × hours a node holds unwritten while the store cannot be reached; past it the oldest are dropped (and logged). */
const MAX_UNWRITTEN = 100_000;
/** Most hours one usage read may cover (35 days by the hour). */
const MAX_READ_HOURS = 35 * 24;

/**
 * What each plate uses (issue 17): messages and bytes published, messages delivered live, client
 * tokens minted, and its peak of open connections, by hour. Each node counts in memory (a Map
 * lookup per count: the fan-out counts once per message, not per delivery) and adds its counts to
 * the store every `USAGE_FLUSH_MS`, in one pipeline; the store sums the nodes. A count is written
 * once: a flush that fails keeps its counts for the next one. A node killed between flushes loses
 * at most that interval of its counts.
 *
 * Peak connections: each node keeps the most connections of a plate it held at once in the hour,
 * and the hour's figure is the sum of the nodes' peaks (at least the true peak).
 */
export class Usage {
  /** The hour being counted (`YYYY-MM-DDTHH`, UTC), and when it ends (epoch ms). */
  #hour = "";
  #hourEnds = 0;
  /** This hour's counts not written yet, by plate. */
  #counts = new Map<PlateId, Partial<Record<UsageCounter, number>>>();
  /** This hour's peak of open connections, by plate (written at each flush; the store keeps the last). */
  #peaks = new Map<PlateId, number>();
  /** Connections open now, by plate. */
  readonly #open = new Map<PlateId, number>();
  /** Counts of hours that ended, and of flushes that failed, waiting to be written. */
  #unwritten: UsageAdd[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;

  constructor(
    private readonly store: Pick<Store, "usageAdd" | "usageRead">,
    private readonly nodeId: string,
    private readonly settings: UsageSettings,
    private readonly log: Logger,
    /** With `METRICS_PLATE_LABELS`, the same counts as per-plate series (published is counted by the publisher). */
    private readonly metrics?: Metrics,
  ) {}

  /** Starts writing every `USAGE_FLUSH_MS`. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.flush(), Math.max(1, this.settings.flushMs));
    this.#timer.unref();
  }

  /** Stops the timer and writes what is counted (a node that drains). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }

  /** Counts `n` of `counter` for `plateId` in the current hour. */
  count(plateId: PlateId, counter: UsageCounter, n: number): void {
    if (n === 0) return;
    this.#roll(Date.now());
    let counts = this.#counts.get(plateId);
    if (counts === undefined) this.#counts.set(plateId, (counts = {}));
    counts[counter] = (counts[counter] ?? 0) + n;
    const metrics = this.metrics;
    const plate = metrics?.plateLabel(plateId);
    if (metrics === undefined || plate === undefined) return;
    if (counter === "publishedBytes") metrics.platePublishedBytes.inc({ plate }, n);
    else if (counter === "delivered") metrics.plateDelivered.inc({ plate }, n);
    else if (counter === "tokensMinted") metrics.plateTokensMinted.inc({ plate }, n);
  }

  /** The plate now has `open` connections on this node. */
  connections(plateId: PlateId, open: number): void {
    this.#roll(Date.now());
    if (open === 0) this.#open.delete(plateId);
    else this.#open.set(plateId, open);
    if (open > (this.#peaks.get(plateId) ?? 0)) this.#peaks.set(plateId, open);
  }

  /** Writes what was counted since the last flush; a failure keeps it for the next. One at a time. */
  flush(): Promise<void> {
    this.#flushing ??= this.#write().finally(() => (this.#flushing = undefined));
    return this.#flushing;
  }

  /**
   * A plate's usage by `hour` or `day` (UTC) from `from` to `to` (`YYYY-MM-DD` or
   * `YYYY-MM-DDTHH`, both included), at most 35 days. Throws `invalid_parameter` otherwise.
   */
  async read(plateId: PlateId, by: string, from: string, to: string): Promise<(Omit<UsageHour, "hour"> & { readonly start: string })[]> {
    if (by !== "hour" && by !== "day") throw new PlateError("invalid_parameter", '"by" is hour or day.');
    const start = parseHour(from, "from", false);
    const end = parseHour(to, "to", true);
    const hours: string[] = [];
    for (let t = start; t <= end; t += 3_600_000) {
      hours.push(new Date(t).toISOString().slice(0, 13));
      if (hours.length > MAX_READ_HOURS) throw new PlateError("invalid_parameter", `A usage read covers at most ${MAX_READ_HOURS / 24} days.`);
    }
    const figures = await this.store.usageRead(plateId, hours);
    if (by === "hour") return figures.map(({ hour, ...rest }) => ({ start: hour + ":00:00.000Z", ...rest }));
    const days = new Map<string, Record<string, number>>();
    for (const { hour, ...rest } of figures) {
      const day = hour.slice(0, 10);
      const sum = days.get(day) ?? Object.fromEntries([...USAGE_COUNTERS, "peakConnections"].map((name) => [name, 0]));
      for (const name of USAGE_COUNTERS) sum[name]! += rest[name];
      // A day's peak is its busiest hour's.
      sum.peakConnections = Math.max(sum.peakConnections!, rest.peakConnections);
      days.set(day, sum);
    }
    return [...days].map(([day, sum]) => ({ start: day + "T00:00:00.000Z", ...(sum as Omit<UsageHour, "hour">) }));
  }

  /** Closes the hour once it has ended: its counts wait to be written, and the next starts with the connections open now. */
  #roll(now: number): void {
    if (now < this.#hourEnds) return;
    if (this.#hour !== "") this.#unwritten.push(...this.#adds());
    const start = now - (now % 3_600_000);
    this.#hour = new Date(start).toISOString().slice(0, 13);
    this.#hourEnds = start + 3_600_000;
    this.#counts = new Map();
    this.#peaks = new Map(this.#open);
  }

  /** The current hour's counts (taken) and peaks (kept: a peak is set, not added). */
  #adds(): UsageAdd[] {
    const adds: UsageAdd[] = [];
    const plates = new Set([...this.#counts.keys(), ...this.#peaks.keys()]);
    for (const plateId of plates) {
      const peak = this.#peaks.get(plateId);
      adds.push({ plateId, hour: this.#hour, counts: this.#counts.get(plateId) ?? {}, ...(peak === undefined ? {} : { peakConnections: peak }) });
    }
    this.#counts = new Map();
    return adds;
  }

  async #write(): Promise<void> {
    this.#roll(Date.now());
    const adds = [...this.#unwritten, ...this.#adds()];
    this.#unwritten = [];
    if (adds.length === 0) return;
    try {
      await this.store.usageAdd(this.nodeId, adds, this.settings.keepDays * 86_400_000);
    } catch (err) {
      // Kept for the next flush, bounded: the oldest go first.
      this.#unwritten = [...adds, ...this.#unwritten];
      const over = this.#unwritten.length - MAX_UNWRITTEN;
      if (over > 0) {
        this.#unwritten.splice(0, over);
        this.log.warn("usage figures dropped: the store has been unreachable too long", { dropped: over });
      }
      this.log.warn("usage not written; trying again", { error: String(err) });
    }
  }
}

/** `YYYY-MM-DD` or `YYYY-MM-DDTHH` as the epoch ms of its first hour (`last`: of its last hour). */
function parseHour(text: string, name: string, last: boolean): number {
  const match = /^(\d{4}-\d{2}-\d{2})(?:T(\d{2}))?$/.exec(text);
  const ms = match === null ? Number.NaN : Date.parse(`${match[1]}T${match[2] ?? "00"}:00:00Z`);
  if (match === null || Number.isNaN(ms)) throw new PlateError("invalid_parameter", `"${name}" is a UTC day (YYYY-MM-DD) or hour (YYYY-MM-DDTHH).`);
  return last && match[2] === undefined ? ms + 23 * 3_600_000 : ms;
}
