#!/usr/bin/env node
/**
 * Prints a heap-sample.ts profile: megabytes allocated by package or file, then by function (self),
 * then, with a second argument (a regular expression of function names), the call paths that led
 * to those functions' allocations.
 *
 *   node load-tests/dist/heap-summary.js /tmp/heap/heap-1234.json [ '^Pipeline ' ]
 */
import { readFileSync } from "node:fs";

interface Node {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children: readonly Node[];
}

const [file, callers] = process.argv.slice(2);
if (file === undefined) throw new Error("usage: heap-summary.js PROFILE.json [FUNCTION_REGEXP]");
const root = (JSON.parse(readFileSync(file, "utf8")) as { head: Node }).head;
const where = (url: string) => url.replace(/.*\/(packages|apps|node_modules)\//, "$1/");
const nameOf = (n: Node) => `${n.callFrame.functionName || "(anonymous)"} ${where(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
const total = (n: Node): number => n.children.reduce((sum, c) => sum + total(c), n.selfSize);

const bySource = new Map<string, number>();
const byFunction = new Map<string, number>();
const byPath = new Map<string, number>();
const pattern = callers === undefined ? undefined : new RegExp(callers);
const add = (map: Map<string, number>, key: string, bytes: number) => map.set(key, (map.get(key) ?? 0) + bytes);
const walk = (n: Node, path: readonly string[]) => {
  const name = nameOf(n);
  add(bySource, where(n.callFrame.url).replace(/\/(dist|lib|built)\/.*/, "") || "(native)", n.selfSize);
  add(byFunction, name, n.selfSize);
  if (pattern?.test(name) === true) add(byPath, [name, ...path.slice(-8).reverse()].join(" <- "), total(n));
  for (const c of n.children) walk(c, [...path, name]);
};
walk(root, []);

const top = (map: Map<string, number>, count: number) =>
  [...map].sort((a, b) => b[1] - a[1]).slice(0, count).map(([k, v]) => `${(v / 1e6).toFixed(2).padStart(8)} MB  ${k}`).join("\n");
process.stdout.write(`allocated: ${(total(root) / 1e6).toFixed(1)} MB\n\nby source\n${top(bySource, 15)}\n\nby function (self)\n${top(byFunction, 30)}\n`);
if (pattern !== undefined) process.stdout.write(`\ncalls that led to ${callers}\n${top(byPath, 10)}\n`);
