#!/usr/bin/env node
/**
 * Compares two benchmark runs of the same targets (e.g. Plate with and without a setting), as a
 * Markdown table of medians and the ratio B/A per row and target:
 *
 *   node load-tests/dist/compare.js on.jsonl off.jsonl --labels "history on,history off"
 *
 * Both files are bench.js JSON lines; rows are those of docs/performance.md.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ROWS, fmt, median, ratio } from "./table.js";
import type { Report } from "./table.js";

type Runs = Map<string, Map<number, Report[]>>;

function load(path: string): Runs {
  const byTarget: Runs = new Map();
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    const { run, ...report } = JSON.parse(line) as Report & { run: number; target: string };
    const runs = byTarget.get(report.target) ?? new Map<number, Report[]>();
    byTarget.set(report.target, runs);
    runs.set(run, [...(runs.get(run) ?? []), report]);
  }
  return byTarget;
}

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { labels: { type: "string", default: "A,B" } } });
  if (positionals.length !== 2) throw new Error("usage: compare.js A.jsonl B.jsonl [--labels A,B]");
  const [labelA, labelB] = values.labels.split(",") as [string, string];
  const a = load(positionals[0]!);
  const b = load(positionals[1]!);
  const lines = [`| workload | target | unit | ${labelA} | ${labelB} | ${labelB} / ${labelA} |`, "|---|---|---|---|---|---|"];
  for (const target of a.keys()) {
    if (!b.has(target)) continue;
    for (const row of ROWS) {
      const pick = (runs: Runs) => median([...(runs.get(target)?.values() ?? [])].map((r) => row.pick(r)).filter((v): v is number => v !== undefined));
      const va = pick(a);
      const vb = pick(b);
      if (va === undefined && vb === undefined) continue;
      lines.push(`| ${row.label} | ${target} | ${row.unit} | ${fmt(va)} | ${fmt(vb)} | ${ratio(vb, va)} |`);
    }
  }
  process.stdout.write(lines.join("\n") + "\n");
}

main();
