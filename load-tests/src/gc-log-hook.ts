/** What a Plate node imports for bench.js's `--gc-log` (`node --import`): see gc-log.ts. */
import { GC_LOG_ENV, startGcLog } from "./gc-log.js";

const file = process.env[GC_LOG_ENV];
if (file !== undefined && file !== "") startGcLog(file);
