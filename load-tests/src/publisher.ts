/** What `Publisher.publish` answers when the server accepted the message. */
export const ACCEPTED = "accepted";
/** What `Publisher.publish` answers when the connection failed or closed before the answer. */
export const CONNECTION_CLOSED = "connection_closed";

/**
 * One publishing connection of a workload, one request in flight at a time (`busy` while one
 * is): a keep-alive HTTP/1.1 socket (`HttpPublisher`) or a WebSocket on Plate's route 9
 * (`WsPublisher`). `publish` resolves, never rejects, with `ACCEPTED` or why the message was not
 * published: the server's error code (WebSocket), `http_<status>` (HTTP), `CONNECTION_CLOSED`, or
 * `closed_<close code>` (a WebSocket the server closed). `close()` destroys the socket; a request
 * in flight then resolves with `CONNECTION_CLOSED`.
 */
export interface Publisher {
  readonly busy: boolean;
  publish(channel: string, payload: string): Promise<string>;
  /** Publishes `payloads` to `channel` in one request, in order (route 12); undefined where there is none. */
  readonly publishBatch?: (channel: string, payloads: readonly string[]) => Promise<string>;
  close(): void;
}
