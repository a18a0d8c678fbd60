import { createServer } from "node:http";

/*
 * W3's reference (issue 18): a bare Node HTTP server that does exactly what any publish must at
 * least do, and nothing else. It reads the body, parses its JSON, and answers a body of the size
 * and shape of Plate's publish answer. No auth, broker, history or delivery: the ceiling a Node
 * publish route could reach on one core. Started by the harness (`--targets bare-node`) as
 * `node load-tests/dist/bare-node.js` with PORT set.
 */

const port = Number(process.env.PORT);
let published = 0;

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    let status = 200;
    let body: string;
    try {
      const parsed = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { message?: unknown };
      if (parsed.message === undefined) throw new Error("no message");
      published += 1;
      body = `{"data":{"id":"0000000000000_${Date.now()}-${published}","channel":"c","timestamp":"${new Date().toISOString()}"}}`;
    } catch {
      status = 400;
      body = '{"error":{"code":"bad_request","message":"The body is not a JSON object with a message."}}';
    }
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.listen(port, "127.0.0.1");
process.once("SIGTERM", () => server.close(() => process.exit(0)));
