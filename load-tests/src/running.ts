/** Something started that must be stopped: a redis-server, a cluster, an edge. */
export interface Stoppable {
  stop(): Promise<void>;
}

/** What is running now, stopped by `stopAll` (on SIGINT/SIGTERM) so an interrupted run leaves nothing behind. */
const live = new Set<() => Promise<void>>();

/** `thing`, registered until its `stop` is called (the same object otherwise). */
export function tracked<T extends Stoppable>(thing: T): T {
  const stop = () => thing.stop();
  live.add(stop);
  const copy = Object.create(thing) as T;
  copy.stop = async () => {
    live.delete(stop);
    await stop();
  };
  return copy;
}

/** Stops everything still registered, the latest started first. */
export async function stopAll(): Promise<void> {
  for (const stop of [...live].reverse()) {
    live.delete(stop);
    await stop().catch(() => undefined);
  }
}
