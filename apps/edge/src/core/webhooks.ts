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
  /** `WEBHOOK_BATCH_MS`: how long events gather before a POST. */
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
  /** `WEBHOOK_MAX_QUEUED`: events one plate may have waiting on one node; past it new ones are dropped. */
  readonly maxQueued: number;
  /** How long a plate's webhook is cached (`KEY_CACHE_MS`). */
  readonly cacheMs: number;
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

/** One plate's events waiting on this node, and its delivery's state. */
interface Outbox {
  readonly events: WebhookPayloadEvent[];
  timer: NodeJS.Timeout | undefined;
  sending: boolean;
}

/**
 * Route 10's channel events for backends: a plate's one webhook, and the signed, batched POSTs of
 * its events. An event is emitted by the one node that made the change (the node whose track or
 * untrack went through, whose first subscriber of a channel made it occupied or whose last made it
 * vacant, or whose sweep removed a dead node's member or left a channel vacant), so each is sent by
 * one node; a failed POST is retried with backoff (at least once while that node lives). The
 * receiver dedupes by event `id`.
 *
 * A POST: `{"plateId","events":[{"id","name","channel","clientId"?,"user"?,"at"}...]}` with
 * `Plate-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`.
 */
export class Webhooks {
  readonly #outboxes = new Map<PlateId, Outbox>();
  readonly #cache = new Map<PlateId, { readonly hook: WebhookRecord | undefined; readonly untilMs: number }>();
  #closed = false;

  constructor(
    private readonly store: Store,
    private readonly settings: WebhookSettings,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly post: typeof fetch = fetch,
  ) {}

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
   * Queues an event of `plateId` for its webhook, if it has one that asks for it. Never throws and
   * never waits: a store that cannot be read drops the event (logged and counted).
   */
  emit(plateId: PlateId, name: WebhookEvent, channel: ChannelName, clientId?: string, user?: string): void {
    if (this.#closed) return;
    const at = new Date().toISOString();
    this.#hookOf(plateId).then(
      (hook) => {
        if (hook === undefined || !hook.events.includes(name)) return;
        this.#enqueue(plateId, {
          id: nanoid(),
          name,
          channel,
          ...(clientId === undefined ? {} : { clientId }),
          ...(user === undefined ? {} : { user }),
          at,
        });
      },
      (err: unknown) => {
        this.metrics.webhookEvents.inc({ outcome: "dropped" });
        this.log.warn("webhook event dropped: the plate's webhook could not be read", { plateId, error: String(err) });
      },
    );
  }

  close(): void {
    this.#closed = true;
    for (const outbox of this.#outboxes.values()) clearTimeout(outbox.timer);
    this.#outboxes.clear();
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

  #enqueue(plateId: PlateId, event: WebhookPayloadEvent): void {
    let outbox = this.#outboxes.get(plateId);
    if (outbox === undefined) this.#outboxes.set(plateId, (outbox = { events: [], timer: undefined, sending: false }));
    if (outbox.events.length >= this.settings.maxQueued) {
      // The batch in flight is the head of the line: the new event is the one that goes.
      this.metrics.webhookEvents.inc({ outcome: "dropped" });
      this.log.warn("webhook queue full: an event was dropped", { plateId });
      return;
    }
    outbox.events.push(event);
    this.#schedule(plateId, outbox, this.settings.batchMs);
  }

  #schedule(plateId: PlateId, outbox: Outbox, delayMs: number): void {
    if (outbox.timer !== undefined || outbox.sending || this.#closed) return;
    outbox.timer = setTimeout(() => {
      outbox.timer = undefined;
      void this.#send(plateId, outbox, 1);
    }, delayMs);
    outbox.timer.unref();
  }

  /** POSTs the first batch of `outbox`; on failure waits and tries it again, up to `maxAttempts`. */
  async #send(plateId: PlateId, outbox: Outbox, attempt: number): Promise<void> {
    if (this.#closed) return;
    const batch = outbox.events.slice(0, this.settings.batchMax);
    if (batch.length === 0) return;
    outbox.sending = true;
    let outcome: string;
    try {
      const hook = await this.#hookOf(plateId);
      if (hook === undefined) {
        // Deleted meanwhile: nothing to tell any more.
        outbox.events.splice(0, batch.length);
        outcome = "dropped";
      } else {
        outcome = await this.#post(hook, batch);
      }
    } catch (err) {
      outcome = `error: ${String(err)}`;
    }
    outbox.sending = false;
    if (outcome === "delivered" || outcome === "dropped") {
      if (outcome === "delivered") outbox.events.splice(0, batch.length);
      this.metrics.webhookEvents.inc({ outcome }, batch.length);
      if (outbox.events.length > 0) this.#schedule(plateId, outbox, 0);
      else if (this.#outboxes.get(plateId) === outbox) this.#outboxes.delete(plateId);
      return;
    }
    if (attempt >= this.settings.maxAttempts) {
      outbox.events.splice(0, batch.length);
      this.metrics.webhookEvents.inc({ outcome: "dropped" }, batch.length);
      this.log.warn("webhook batch dropped after its last attempt", { plateId, attempts: attempt, outcome });
      if (outbox.events.length > 0) this.#schedule(plateId, outbox, 0);
      return;
    }
    const waitMs = Math.min(this.settings.retryMaxMs, this.settings.retryFirstMs * 2 ** (attempt - 1));
    this.log.debug("webhook POST failed; retrying", { plateId, attempt, waitMs, outcome });
    outbox.sending = true;
    const timer = setTimeout(() => {
      outbox.sending = false;
      void this.#send(plateId, outbox, attempt + 1);
    }, waitMs);
    timer.unref();
  }

  /** One signed POST; "delivered" for a 2xx answer, else what went wrong. */
  async #post(hook: WebhookRecord, events: readonly WebhookPayloadEvent[]): Promise<string> {
    const body = JSON.stringify({ plateId: hook.plateId, events });
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
    broker.presence.onVacated((plateId, channel) => webhooks.emit(plateId, "channel_vacated", channel));
  }

  opened(plateId: PlateId, channel: ChannelName): void {
    this.broker.presence.occupy(plateId, channel).then(
      (occupied) => occupied && this.webhooks.emit(plateId, "channel_occupied", channel),
      (err: unknown) => this.log.warn("channel occupancy not counted", { plateId, error: String(err) }),
    );
  }

  closed(plateId: PlateId, channel: ChannelName): void {
    this.broker.presence.vacate(plateId, channel).then(
      (vacant) => vacant && this.webhooks.emit(plateId, "channel_vacated", channel),
      (err: unknown) => this.log.warn("channel occupancy not counted", { plateId, error: String(err) }),
    );
  }
}
