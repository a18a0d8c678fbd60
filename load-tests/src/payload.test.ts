import { describe, expect, it } from "vitest";
import { PayloadScanner, encodePayload } from "./payload.js";

function scan(chunks: string[]): [number, number, number][] {
  const found: [number, number, number][] = [];
  const scanner = new PayloadScanner((seq, publisher, sentMs) => found.push([seq, publisher, sentMs]));
  for (const chunk of chunks) scanner.feed(chunk);
  return found;
}

describe("PayloadScanner", () => {
  const stream =
    'HTTP/1.1 200 OK\r\n\r\n7b\r\nid: x\ndata: {"type":"message","message":' +
    encodePayload(12, 3, 456.789) +
    ',"timestamp":"t"}\n\n\r\n\x81\x1b' +
    encodePayload(0, 0, 1.5) +
    encodePayload(7, 1, 2);

  it("finds every payload inside SSE events, chunked encoding and WebSocket frames", () => {
    expect(scan([stream])).toEqual([
      [12, 3, 456.789],
      [0, 0, 1.5],
      [7, 1, 2],
    ]);
  });

  it("finds the same payloads whatever the read boundaries, even inside a payload or its start", () => {
    for (let cut = 1; cut < stream.length; cut++) {
      expect(scan([stream.slice(0, cut), stream.slice(cut)])).toEqual(scan([stream]));
    }
  });
});
