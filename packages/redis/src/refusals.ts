/**
 * What a Redis error reply says happened: its code (the reply's first word, e.g. `OOM`) and a
 * phrase an operator can act on, for the answer a client gets and the node's log.
 */
export interface RedisRefusal {
  readonly code: string;
  readonly what: string;
}

/** Error replies Redis gives while it is reachable but will not run the command. */
const REFUSALS: Readonly<Record<string, string>> = {
  OOM: "Redis is out of memory (OOM: used memory is over maxmemory)",
  READONLY: "Redis is a read-only replica (READONLY), as after a failover; the node reconnects to reach the primary",
  MOVED: "Redis is a Redis Cluster (MOVED): set REDIS_CLUSTER_NODES (not REDIS_URL) to use one",
  ASK: "Redis is a Redis Cluster (ASK): set REDIS_CLUSTER_NODES (not REDIS_URL) to use one",
  CROSSSLOT: "Redis is a Redis Cluster (CROSSSLOT): set REDIS_CLUSTER_NODES (not REDIS_URL) to use one",
  CLUSTERDOWN: "Redis Cluster cannot serve this plate's hash slot now (CLUSTERDOWN), as during a failover or a slot migration",
  TRYAGAIN: "Redis Cluster cannot serve this plate's hash slot now (TRYAGAIN), as during a failover or a slot migration",
  LOADING: "Redis is loading its data set (LOADING)",
  BUSY: "Redis is busy running a script (BUSY)",
  MISCONF: "Redis refuses writes because it cannot save to disk (MISCONF)",
  MASTERDOWN: "Redis is a replica that lost its primary (MASTERDOWN)",
  NOREPLICAS: "Redis refuses writes: not enough replicas (NOREPLICAS)",
  NOAUTH: "Redis requires a password (NOAUTH): check REDIS_URL",
  WRONGPASS: "Redis refused the credentials in REDIS_URL (WRONGPASS)",
  NOPERM: "Redis' ACL forbids a command the node needs (NOPERM)",
};

/** The refusal an error is, or undefined when it is no Redis reply (the connection failed or timed out). */
export function redisRefusal(err: unknown): RedisRefusal | undefined {
  if (!(err instanceof Error) || err.name !== "ReplyError") return undefined;
  const code = /^[A-Z]+/.exec(err.message)?.[0] ?? "ERR";
  return { code, what: REFUSALS[code] ?? `Redis refused the command (${code})` };
}

/**
 * ioredis' `reconnectOnError`: a primary demoted by a failover answers every write with READONLY
 * while its clients stay connected to it; a new connection to the same address reaches whatever
 * now stands there (the new primary, behind a proxy, DNS name or virtual IP). The failed command
 * is not sent again (it fails to its caller).
 */
export function reconnectOnReadOnly(err: Error): boolean {
  return err.message.startsWith("READONLY");
}

/** Where a Redis client reports what an operator should know. */
export type Warn = (message: string, fields?: Record<string, string | number | boolean | undefined>) => void;

/**
 * Classifies the errors of one client's commands and warns of a refusal once per episode: a
 * refusal warns when it differs from the last one warned, until a command succeeds again (an OOM
 * Redis refuses every publish; the log says so once, not at each).
 */
export class RefusalWarnings {
  /** The code of the refusal last warned about, until a command succeeds. */
  #refusing: string | undefined;

  constructor(
    private readonly warn: Warn | undefined,
    /** The warning's message, naming the client (`redis refuses the broker's commands`). */
    private readonly message: string,
  ) {}

  /** The refusal `err` is (warned about when it starts an episode), or undefined when it is none. */
  failed(err: unknown): RedisRefusal | undefined {
    const refusal = redisRefusal(err);
    if (refusal !== undefined && refusal.code !== this.#refusing) {
      this.#refusing = refusal.code;
      this.warn?.(this.message, { redisError: refusal.code, what: refusal.what });
    }
    return refusal;
  }

  /** A command succeeded: the next refusal warns again. */
  succeeded(): void {
    this.#refusing = undefined;
  }
}
