import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FrontQueue } from "./front-queue.js";

describe("FrontQueue", () => {
  it("holds what an array would after any pushes and drops from the front", () => {
    const op = fc.oneof(fc.record({ push: fc.integer({ min: 1, max: 40 }) }), fc.record({ drop: fc.nat({ max: 200 }) }));
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const queue = new FrontQueue<number>();
        const model: number[] = [];
        let next = 0;
        for (const o of ops) {
          if ("push" in o) {
            for (let i = 0; i < o.push; i++) {
              queue.push(next);
              model.push(next++);
            }
          } else {
            const count = Math.min(o.drop, model.length);
            queue.dropFront(count);
            model.splice(0, count);
          }
          expect(queue.length).toBe(model.length);
          if (model.length > 0) expect([queue.at(0), queue.at(model.length - 1)]).toEqual([model[0], model.at(-1)]);
        }
        expect([...queue]).toEqual(model);
      }),
      { numRuns: 300 },
    );
  });

  it("keeps a channel's window as it slides by one a publish", () => {
    const queue = new FrontQueue<number>();
    for (let i = 0; i < 100_000; i++) {
      queue.push(i);
      if (queue.length > 100) queue.dropFront(1);
    }
    expect(queue.length).toBe(100);
    expect([...queue]).toEqual(Array.from({ length: 100 }, (_, i) => 99_900 + i));
  });
});
