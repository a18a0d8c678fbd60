import type { EventEmitter } from "node:events";

interface WithEvents {
  _events?: unknown;
}

/**
 * An EventEmitter keeps its listeners in `_events`, an object made with a null prototype, which V8
 * holds as a hash table; `removeAllListeners(event)` deletes keys, and the table never shrinks.
 * The HTTP server's listeners grow a socket's table to 832 bytes, which every idle SSE stream then
 * held once they were removed (heap snapshot of 2,000 SSE subscribers: 825 bytes a connection, the
 * largest single object after the native socket); an upgraded WebSocket's, 251. The listeners left
 * (seven on an SSE stream) are copied into an object whose prototype is set to null after it is
 * made: V8 keeps that one in fast mode, its layout shared by every socket with the same listeners,
 * so they take some 100 bytes (a fresh hash table for the seven took 448).
 *
 * Call it once a long-lived socket's listeners are settled. Should a later Node keep its
 * listeners elsewhere, the emitter keeps its table (correct, only heavier).
 */
export function compactListeners(emitter: EventEmitter): void {
  const events = (emitter as WithEvents)._events;
  if (typeof events !== "object" || events === null) return;
  const copy = Object.setPrototypeOf({}, null) as Record<string | symbol, unknown>;
  for (const key of Reflect.ownKeys(events)) copy[key] = (events as Record<string | symbol, unknown>)[key];
  (emitter as WithEvents)._events = copy;
}
