import { PlateClientError, errorFromResponse } from "./errors.js";
import type { ErrorCode } from "./errors.js";
import { nameKey } from "./realtime-transport.js";
import type {
  AnyReady,
  RealtimeEvents,
  RealtimeLink,
  RealtimeTarget,
  SubscriptionRequest,
  Unsubscribed,
} from "./realtime-transport.js";
import type { PresenceFrame } from "./realtime-presence.js";
import { SseParser, readEventStream } from "./sse.js";
import { IdleWatch } from "./transport.js";
import type { Envelope, RealtimeReset, SubscriptionInfo, SubscriptionName } from "./types.js";

/**
 * One realtime connection over Server-Sent Events, read with `fetch` (see sse.ts for why not
 * `EventSource`). The stream opens with the subscriptions in its URL's query; later changes are
 * `POST /{plate}/realtime/{clientId}` requests, whose effect the stream tells (`event: subscribed`,
 * `event: unsubscribed`, then what was missed or an `event: reset`). The requests about one name
 * are sent one after the other, so that an unsubscribe and a subscribe again reach the service in
 * that order; requests about different names go at once.
 *
 * A change the service cannot find the stream for (404 `not_found`) or cannot be sent (network)
 * ends the attempt: the stream is gone or going, and the next one opens with every subscription.
 */
export function openRealtimeSse(target: RealtimeTarget, events: RealtimeEvents, fetchImpl: typeof fetch): RealtimeLink {
  const controller = new AbortController();
  let over = false;
  let clientId: string | undefined;
  const stop = (): void => {
    over = true;
    idle.stop();
    controller.abort();
  };
  const finish = (error: PlateClientError): void => {
    if (over) return;
    stop();
    events.end(error);
  };
  const idle = new IdleWatch(target.idleTimeoutMs, (ms) =>
    finish(new PlateClientError("network_error", `Nothing arrived for ${ms} ms, not even a heartbeat.`)),
  );
  const headers: Record<string, string> = { Accept: "text/event-stream" };
  if (target.key !== undefined) headers.Authorization = `Bearer ${target.key}`;

  let endedWith: PlateClientError | undefined;
  const parser = new SseParser((event, data) => {
    if (over) return;
    switch (event) {
      case "message":
        events.message(JSON.parse(data) as Envelope);
        break;
      case "ready": {
        const ready = JSON.parse(data) as AnyReady;
        clientId = ready.clientId;
        events.ready(ready);
        break;
      }
      case "subscribed": {
        // The oldest request of that name still unanswered is the one this answers.
        const info = JSON.parse(data) as SubscriptionInfo;
        const ref = unanswered.get(nameKey(info))?.shift();
        events.subscribed(ref === undefined ? info : { ...info, ref });
        break;
      }
      case "unsubscribed":
        events.unsubscribed(JSON.parse(data) as Unsubscribed);
        break;
      case "reset":
        events.reset(JSON.parse(data) as RealtimeReset);
        break;
      case "presence":
        events.presence(JSON.parse(data) as PresenceFrame);
        break;
      case "error": {
        // The server says why it ends the stream (max_dur, slow consumer, drain); the end follows.
        const body = JSON.parse(data) as { error: { code: ErrorCode; message: string } };
        endedWith = new PlateClientError(body.error.code, body.error.message);
        break;
      }
    }
  });

  void readEventStream(fetchImpl, target.url, { headers, signal: controller.signal, cache: "no-store" }, parser, () => idle.touch()).then(
    (error) => finish(endedWith ?? error),
  );

  /**
   * The refs of the subscribe requests sent about each name whose `event: subscribed` has not
   * come yet, oldest first: the stream's events carry no ref, and a name subscribed, unsubscribed
   * and subscribed again has two answers, of which only the second is the live subscription's.
   */
  const unanswered = new Map<string, number[]>();
  /** The tail of the requests about each name (see the function's comment). */
  const queues = new Map<string, Promise<void>>();
  const enqueue = (name: SubscriptionName, send: () => Promise<void>): void => {
    const key = nameKey(name);
    const tail = (queues.get(key) ?? Promise.resolve())
      .then(send)
      .catch((err: unknown) =>
        finish(
          new PlateClientError("network_error", `A change of the stream's subscriptions failed: ${String(err)}`, {
            cause: err,
          }),
        ),
      );
    queues.set(key, tail);
    void tail.then(() => {
      if (queues.get(key) === tail) queues.delete(key);
    });
  };
  /** Sends one change; answers the refusal, or undefined when the service took it. */
  const change = async (body: object): Promise<PlateClientError | undefined> => {
    if (over || clientId === undefined) return undefined;
    const res = await fetchImpl(target.changes.url(clientId), {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${target.changes.credential}` },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (res.ok) {
      await res.body?.cancel();
      return undefined;
    }
    const error = await errorFromResponse(res);
    if (error.code !== "not_found") return error;
    finish(new PlateClientError("network_error", "The service no longer knows this stream.", { status: res.status }));
    return undefined;
  };

  return {
    subscribe(ref: number, request: SubscriptionRequest) {
      const key = nameKey(request);
      enqueue(request, async () => {
        // Noted before it is sent: the stream may tell of it before the POST is answered.
        const refs = unanswered.get(key) ?? [];
        unanswered.set(key, refs);
        refs.push(ref);
        const refused = await change({ subscribe: [request] });
        if (refused === undefined) return;
        const at = refs.indexOf(ref);
        if (at !== -1) refs.splice(at, 1);
        if (!over) events.refused(ref, refused);
      });
    },
    unsubscribe(_ref: number, name: SubscriptionName) {
      // A refusal (it had already ended, say) leaves nothing to do: the subscription is gone here.
      enqueue(name, async () => void (await change({ unsubscribe: [name] })));
    },
    close() {
      stop();
    },
  };
}
