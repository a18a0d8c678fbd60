/**
 * What a Plate node allocates, garbage included: loaded into the node with
 * `--plate-env NODE_OPTIONS=--import=<root>/load-tests/dist/heap-sample.js,HEAP_SAMPLE_DIR=/tmp/heap`,
 * it runs V8's sampling heap profiler (one sample per `HEAP_SAMPLE_BYTES` allocated, 2048 by
 * default) counting objects the collector has freed as well, and writes the profile to
 * `HEAP_SAMPLE_DIR/heap-<pid>.json` when the node exits. `node load-tests/dist/heap-summary.js
 * FILE` prints where the bytes were allocated. Node's own `--heap-prof` keeps only what is still
 * alive at exit, which says nothing of the garbage that W4 reads 2 s after opening.
 *
 * `HEAP_SAMPLE_OLD_ONLY=1` leaves out what the young generation's collections freed: what is left
 * is what stayed alive plus what died only after it was promoted, the old space's garbage, which
 * stays in RSS until a full collection (the memory reducer's, some 30 s after a burst).
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const dir = process.env.HEAP_SAMPLE_DIR ?? ".";
const session = new Session();
session.connect();
session.post("HeapProfiler.enable");
session.post("HeapProfiler.startSampling", {
  samplingInterval: Number(process.env.HEAP_SAMPLE_BYTES ?? 2048),
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: process.env.HEAP_SAMPLE_OLD_ONLY !== "1",
});
process.on("exit", () => {
  // An in-process session answers synchronously: the profile is written before the process ends.
  session.post("HeapProfiler.stopSampling", (err, result) => {
    if (err === null) writeFileSync(join(dir, `heap-${process.pid}.json`), JSON.stringify(result.profile));
  });
});
