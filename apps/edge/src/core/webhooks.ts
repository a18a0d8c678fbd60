import { createHmac, randomBytes } from "node:crypto";
import { PlateError } from "@plate/protocol";
import type { ChannelName, PlateId } from "@plate/protocol";
import type { Broker } from "@plate/broker";
import type { Store, WebhookEvent, WebhookRecord } from "@plate/store";
import { nanoid } from "nanoid";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";

/** Settings of webhook delivery (see config.ts). */
export interface WebhookSettings {
  /** `WEBHOOK_BATCH_MS`: how often a node polls the queues (events gather meanwhile). */
  readonly batchMs: number;
  /** `WEBHOOK_BATCH_MAX`: events per POST at most. */
  readonly batchMax: number;
  /** `WEBHOOK_TIMEOUT_MS`: one POST's time to answer. */
  readonly timeoutMs: number;
  /** `WEBHOOK_RETRY_FIRST_MS`: the first wait before a retry; it doubles up to `retryMaxMs`. */
  readonly retryFirstMs: number;
  readonly retryMaxMs: number;
  /** `WEBHOOK_MAX_ATTEMPTS`: tries of one batch before it is dropped. */
  readonly maxAttempts: number;
  /** `WEBHOOK_MAX_QUEUED`: events one plate may have waiting; past it the oldest go. */
  readonly maxQueued: number;
  /** How long a plate's webhook is cached (`KEY_CACHE_MS`). */
  readonly cacheMs: number;
  /**
   * A plate's POSTs a second over every node and their burst (`WEBHOOK_RATE_PER_S`,
   * `WEBHOOK_BURST`, or the plate's own limits); 0 = unlimited. Past it, its events wait in its queue.
   */
  readonly rateOf?: (plateId: PlateId) => Promise<{ readonly perS: number; readonly burst: number }>;
}

/** The events a webhook may ask for (all by default). */
export const WEBHOOK_EVENTS: readonly WebhookEvent[] = ["channel_occupied", "channel_vacated", "member_added", "member_removed"];
/** A webhook URL's length at most. */
const MAX_URL_CHARS = 2048;
/** Bytes of a webhook's HMAC secret. */
const SECRET_BYTES = 32;

/** One event as the receiver gets it. */
export interface WebhookPayloadEvent {
  readonly id: string;
  readonly name: WebhookEvent;
  readonly channel: string;
  /** Member events: the member's client id, and its user when it has one. */
  readonly clientId?: string;
  readonly user?: string;
  /** ISO-8601 time the node saw it. */
  readonly at: string;
}

/** A plate's webhook as the admin API shows it (its secret only when set). */
export interface WebhookView {
  readonly url: string;
  readonly events: readonly WebhookEvent[];
  readonly createdAt: string;
}

/**
 * Route 10's channel events for backends: a plate's one webhook, and the signed, batched POSTs of
 * its events. An event is emitted by the one node that made the change (the node whose track or
 * untrack went through, whose first subscriber of a channel made it occupied or whose last made it
 * vacant, or whose sweep removed a dead node's member or left a channel vacant), and put in the
 * plate's queue in the store (on Redis, shared by every node). Every node polls the queues: one node
 * at a time claims a plate's first events, POSTs them, and removes them once answered 2xx; a failed
 * POST is retried with backoff, by whichever node claims it next; a node that dies holding a claim
 * lets it go when its lease ends. So each event is delivered at least once, in order per plate,
 * even when the node that emitted it dies; the receiver dedupes by event `id`.
 *
 * A POST: `{"plateId","events":[{"id","name","channel","clientId"?,"user"?,"at"}...]}` with
 * `Plate-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`.
 */
export class Webhooks {
  readonly #cache = new Map<PlateId, { readonly hook: WebhookRecord | undefined; readonly untilMs: number }>();
  #poller: NodeJS.Timeout | undefined;
  #polling = false;
  #closed = false;

  constructor(
    private readonly store: Store,
    private readonly settings: WebhookSettings,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly post: typeof fetch = fetch,
  ) {}

  /** Starts polling the queues (every `WEBHOOK_BATCH_MS`). */
  start(): void {
    if (this.#poller !== undefined || this.#closed) return;
    this.#poller = setInterval(() => void this.#poll(), Math.max(1, this.settings.batchMs));
    this.#poller.unref();
  }

  /** Sets the plate's webhook (admin): `{"url","events"?}`; answers it with its new secret. */
  async set(plateId: PlateId, input: unknown): Promise<WebhookView & { readonly secret: string }> {
    const body = (typeof input === "object" && input !== null ? input : {}) as { url?: unknown; events?: unknown };
    if (typeof body.url !== "string" || body.url.length > MAX_URL_CHARS || !isHttpUrl(body.url)) {
      throw new PlateError("invalid_parameter", `"url" is an http:// or https:// URL of at most ${MAX_URL_CHARS} characters.`);
    }
    const events = body.events ?? WEBHOOK_EVENTS;
    if (!Array.isArray(events) || events.length === 0 || !events.every((e): e is WebhookEvent => WEBHOOK_EVENTS.includes(e as WebhookEvent))) {
      throw new PlateError("invalid_parameter", `"events" is a list of ${WEBHOOK_EVENTS.join(", ")}.`);
    }
    const record: WebhookRecord = {
      plateId,
      url: body.url,
      secret: randomBytes(SECRET_BYTES).toString("base64url"),
      events: [...new Set(events)],
      createdAt: new Date().toISOString(),
    };
    await this.store.setWebhook(record);
    this.#cache.delete(plateId);
    return { ...view(record), secret: record.secret };
  }

  async get(plateId: PlateId): Promise<WebhookView | undefined> {
    const hook = await this.store.getWebhook(plateId);
    return hook === undefined ? undefined : view(hook);
  }

  async delete(plateId: PlateId): Promise<boolean> {
    this.#cache.delete(plateId);
    return this.store.deleteWebhook(plateId);
  }

  /**
   * Queues an event of `plateId` for its webhook, if it has one that asks for it; settles once it is
   * in the queue (or was not wanted). Never rejects: a store that cannot be reached drops the event
   * (logged and counted). A change a client is told of (a track's or untrack's answer) waits for it,
   * so a node that dies after answering has already queued the event.
   */
  emit(plateId: PlateId, name: WebhookEvent, channel: ChannelName, clientId?: string, user?: string): Promise<void> {
    if (this.#closed) return Promise.resolve();
    const event: WebhookPayloadEvent = {
      id: nanoid(),
      name,
      channel,
      ...(clientId === undefined ? {} : { clientId }),
      ...(user === undefined ? {} : { user }),
      at: new Date().toISOString(),
    };
    return this.#hookOf(plateId)
      .then((hook) => {
        if (hook === undefined || !hook.events.includes(name)) return;
        return this.store.webhookPush(plateId, [JSON.stringify(event)], this.settings.maxQueued);
      })
      .catch((err: unknown) => {
        this.metrics.webhookEvents.inc({ outcome: "dropped" });
        this.log.warn("webhook event dropped: the store could not be reached", { plateId, error: String(err) });
      });
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#poller);
  }

  async #hookOf(plateId: PlateId): Promise<WebhookRecord | undefined> {
    const now = Date.now();
    const cached = this.#cache.get(plateId);
    if (cached !== undefined && cached.untilMs > now) return cached.hook;
    const hook = await this.store.getWebhook(plateId);
    if (this.#cache.size >= MAX_CACHED_PLATES) this.#cache.clear();
    this.#cache.set(plateId, { hook, untilMs: now + this.settings.cacheMs });
    return hook;
  }

  /** One pass over the plates with events waiting: each one this node can claim is sent. */
  async #poll(): Promise<void> {
    if (this.#polling || this.#closed) return;
    this.#polling = true;
    try {
      const plates = await this.store.webhookWaiting(PLATES_PER_POLL);
      for (let i = 0; i < plates.length; i += SENDS_AT_ONCE) {
        await Promise.all(plates.slice(i, i + SENDS_AT_ONCE).map((plateId) => this.#send(plateId)));
      }
    } catch (err) {
      this.log.debug("webhook queues not polled; trying again", { error: String(err) });
    } finally {
      this.#polling = false;
    }
  }

  /** Claims a plate's first events, POSTs them, and settles them: removed, or retried after a wait. */
  async #send(plateId: PlateId): Promise<void> {
    // A plate over its webhook rate keeps its events queued (bounded by `WEBHOOK_MAX_QUEUED`) for a later poll.
    const rate = await this.settings.rateOf?.(plateId);
    if (rate !== undefined && rate.perS > 0 && (await this.store.takeRate(plateId, "webhook", rate.perS, rate.burst, 1)) > 0) return;
    // Held a little longer than a POST may take, so that no other node sends them meanwhile.
    const claim = await this.store.webhookClaim(plateId, this.settings.batchMax, this.settings.timeoutMs + CLAIM_MARGIN_MS);
    if (claim === undefined || this.#closed) return;
    this.#cache.delete(plateId);
    const hook = await this.#hookOf(plateId);
    if (hook === undefined) {
      // Deleted meanwhile: nothing to tell any more.
      await this.store.webhookDone(plateId, claim.ids);
      this.metrics.webhookEvents.inc({ outcome: "dropped" }, claim.ids.length);
      return;
    }
    let outcome: string;
    try {
      outcome = await this.#post(hook, claim.events);
    } catch (err) {
      outcome = String(err);
    }
    const attempt = claim.attempts + 1;
    if (outcome === "delivered") {
      await this.store.webhookDone(plateId, claim.ids);
      this.metrics.webhookEvents.inc({ outcome }, claim.ids.length);
    } else if (attempt >= this.settings.maxAttempts) {
      await this.store.webhookDone(plateId, claim.ids);
      this.metrics.webhookEvents.inc({ outcome: "dropped" }, claim.ids.length);
      this.log.warn("webhook batch dropped after its last attempt", { plateId, attempts: attempt, outcome });
    } else {
      const waitMs = Math.min(this.settings.retryMaxMs, this.settings.retryFirstMs * 2 ** (attempt - 1));
      this.log.debug("webhook POST failed; retrying", { plateId, attempt, waitMs, outcome });
      await this.store.webhookRetry(plateId, waitMs);
    }
  }

  /** One signed POST; "delivered" for a 2xx answer, else what went wrong. */
  async #post(hook: WebhookRecord, events: readonly string[]): Promise<string> {
    const body = '{"plateId":"' + hook.plateId + '","events":[' + events.join(",") + "]}";
    const t = Math.floor(Date.now() / 1000);
    const signature = createHmac("sha256", hook.secret).update(`${t}.${body}`).digest("hex");
    const res = await this.post(hook.url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Plate-Signature": `t=${t},v1=${signature}`, "User-Agent": "plate-webhooks" },
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(this.settings.timeoutMs),
    });
    await res.body?.cancel();
    return res.status >= 200 && res.status < 300 ? "delivered" : `status ${res.status}`;
  }
}

/** Plates with events one poll looks at, at most. */
const PLATES_PER_POLL = 100;
/** POSTs one node has in flight at once. */
const SENDS_AT_ONCE = 8;
/** How much longer than `WEBHOOK_TIMEOUT_MS` a claim is held. */
const CLAIM_MARGIN_MS = 1_000;

/** Plates whose webhook one node caches at most; past it the cache starts again. */
const MAX_CACHED_PLATES = 10_000;

function view(record: WebhookRecord): WebhookView {
  return { url: record.url, events: record.events, createdAt: record.createdAt };
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:";
  } catch {
    return false;
  }
}

/**
 * `channel_occupied` and `channel_vacated`: this node's first subscriber of a channel arriving and
 * its last leaving (from the fan-out), counted over every node by the broker, which says when the
 * channel changed; and a dead node's channels, from this node's sweep.
 */
export class ChannelEvents {
  constructor(
    private readonly broker: Broker,
    private readonly webhooks: Pick<Webhooks, "emit">,
    private readonly log: Logger,
  ) {
    broker.presence.onVacated((plateId, channel) => void webhooks.emit(plateId, "channel_vacated", channel));
  }

  opened(plateId: PlateId, channel: ChannelName): void {
    this.broker.presence.occupy(plateId, channel).then(
      (occupied) => occupied && void this.webhooks.emit(plateId, "channel_occupied", channel),
      (err: unknown) => this.log.warn("channel occupancy not counted", { plateId, error: String(err) }),
    );
  }

  closed(plateId: PlateId, channel: ChannelName): void {
    this.broker.presence.vacate(plateId, channel).then(
      (vacant) => vacant && void this.webhooks.emit(plateId, "channel_vacated", channel),
      (err: unknown) => this.log.warn("channel occupancy not counted", { plateId, error: String(err) }),
    );
  }
}
