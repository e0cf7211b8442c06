// What the e2e tests need from their environment, and how to provide it.
import { existsSync } from "node:fs";
import { CHROMIUM_PATH } from "./browser";

export const HOW_TO =
  "Run the end-to-end tests against a running viewer (the API server serving the built UI on one origin):\n" +
  "  (cd ui && bun run build)\n" +
  "  uvicorn server.app:app --port 24577        # from the repository root\n" +
  "  cd ui && VIEWER_URL=http://127.0.0.1:24577 E2E_DICTIONARY=<dictionary name> E2E_ANALYSIS=<analysis name> bun run test:e2e\n" +
  "E2E_DICTIONARY / E2E_ANALYSIS default to the first dictionary that has an analysis; the pytest suite starts the server and sets all three.";

export function viewerUrl(): string {
  const url = process.env.VIEWER_URL;
  if (!url) throw new Error(`VIEWER_URL is not set, so there is no viewer to test.\n${HOW_TO}`);
  return url.replace(/\/+$/, "");
}

/** Fail with one clear sentence when the browser, the API or the built UI is missing. */
export async function checkViewer(base: string): Promise<void> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`No browser at ${CHROMIUM_PATH}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH.`);
  }
  let health: Response;
  try {
    health = await fetch(`${base}/api/health`);
  } catch (e) {
    throw new Error(`Cannot reach the viewer at VIEWER_URL=${base} (${(e as Error).message}).\n${HOW_TO}`);
  }
  if (!health.ok) throw new Error(`${base}/api/health answered HTTP ${health.status}; is VIEWER_URL the viewer's API server?`);
  const html = await (await fetch(`${base}/`)).text();
  if (!html.includes('id="root"')) {
    throw new Error(`${base}/ does not serve the built viewer (ui/dist/index.html): run \`bun run build\` in ui/ before starting the server.`);
  }
}

export interface Chosen {
  dictionary: string;
  analysis: string;
  dSae: number;
}

/** The dictionary and analysis the tests browse: E2E_DICTIONARY / E2E_ANALYSIS, else the first with an analysis. */
export async function chosenDictionary(base: string): Promise<Chosen> {
  const list = (await (await fetch(`${base}/api/dictionaries`)).json()) as { dictionaries: { name: string; analyses: string[]; d_sae: number }[] };
  const chosen = process.env.E2E_DICTIONARY
    ? list.dictionaries.find((d) => d.name === process.env.E2E_DICTIONARY)
    : list.dictionaries.find((d) => d.analyses.length > 0);
  if (!chosen) throw new Error(`E2E_DICTIONARY=${process.env.E2E_DICTIONARY ?? "(unset)"} is not served at ${base} (found: ${list.dictionaries.map((d) => d.name).join(", ") || "none"}).`);
  const analysis = process.env.E2E_ANALYSIS ?? chosen.analyses[0];
  if (!chosen.analyses.includes(analysis)) throw new Error(`Dictionary ${chosen.name} has no analysis ${analysis} (has: ${chosen.analyses.join(", ")}).`);
  return { dictionary: chosen.name, analysis, dSae: chosen.d_sae };
}
