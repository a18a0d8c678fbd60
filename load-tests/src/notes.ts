import { readFileSync } from "node:fs";

/** The heading from which a written table's file is people's notes, kept when the table is rewritten. */
export const NOTES_HEADING = "## Reading this run";

/** The notes section of the file at `path` (from `NOTES_HEADING` on), or nothing. */
export function keptNotes(path: string): string {
  try {
    const text = readFileSync(path, "utf8");
    const at = text.indexOf(NOTES_HEADING);
    return at === -1 ? "" : "\n" + text.slice(at);
  } catch {
    return "";
  }
}
