import WebSocket from "ws";

/** A WebSocket client that records frames and the close, for assertions. */
export class WsClient {
  readonly frames: any[] = [];
  closeCode: number | undefined;
  closeReason = "";
  opened = false;

  private constructor(readonly socket: WebSocket) {
    socket.on("open", () => (this.opened = true));
    socket.on("message", (data: Buffer) => this.frames.push(JSON.parse(data.toString("utf8"))));
    socket.on("close", (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
    });
    socket.on("error", () => undefined);
  }

  /** Connects to `url`; with `auth`, sends `{"auth": auth}` (and `since`, if given) as the first frame once open. */
  static async connect(
    url: string,
    options: { headers?: Record<string, string>; auth?: string; since?: string } = {},
  ): Promise<WsClient> {
    const client = new WsClient(new WebSocket(url, { headers: options.headers }));
    await new Promise<void>((resolve) => {
      client.socket.once("open", () => resolve());
      client.socket.once("close", () => resolve());
      client.socket.once("unexpected-response", () => resolve());
    });
    if (options.auth !== undefined && client.opened) client.socket.send(JSON.stringify({ auth: options.auth, since: options.since }));
    return client;
  }

  get messages(): any[] {
    return this.frames.filter((f) => f.type === "message");
  }

  async waitFor(type = "ready", timeoutMs = 3000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find((f) => f.type === type);
      if (found) return found;
      if (Date.now() > deadline || this.closeCode !== undefined) {
        throw new Error(`no "${type}" frame (closed ${this.closeCode} ${this.closeReason})`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async waitForMessages(count: number, timeoutMs = 5000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < count && Date.now() < deadline && this.closeCode === undefined) {
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.messages;
  }

  /** Waits for the close and answers its code. */
  async waitForClose(timeoutMs = 5000): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.closeCode === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    return this.closeCode;
  }

  close(): void {
    this.socket.terminate();
  }
}
