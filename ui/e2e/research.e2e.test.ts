// End-to-end: the research tools in a real browser against a real server: token search, nearest
// features, steering, labels (surviving a reload; a conflicting edit from a second tab is shown and
// not lost), and a sweep run's page. Env as viewer.e2e.test.ts, plus E2E_SWEEP_RUN (a run of
// several dictionaries; default: the first run with more than one) and E2E_IMPORTED (an imported dictionary's id;
// its test is skipped without it).
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { launchBrowser } from "./browser";
import { checkViewer, chosenDictionary, viewerUrl } from "./env";

const BASE = viewerUrl();
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "..", "screenshots");
const MODEL_TIMEOUT = 90_000; // the first request that runs the model loads it

let browser: Browser;
let context: BrowserContext;
let page: Page;
let dictionary: string;
let analysis: string;
let sweep: { name: string; dictionaries: string[] };

const enc = encodeURIComponent;
const dictUrl = () => `${BASE}/dictionaries/${enc(dictionary)}?analysis=${enc(analysis)}`;
const featureUrl = (i: number) => `${BASE}/dictionaries/${enc(dictionary)}/analyses/${enc(analysis)}/features/${i}`;
const featureIndexFromUrl = (url: string) => Number(/\/features\/(\d+)$/.exec(new URL(url).pathname)?.[1] ?? NaN);

async function screenshot(name: string, p: Page = page) {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function visibleFeatureIndex(p: Page): Promise<number> {
  const body = p.getByTestId("feature-body");
  await body.waitFor();
  return Number(await body.getAttribute("data-feature"));
}

async function json<T>(path: string): Promise<T> {
  return (await (await fetch(`${BASE}${path}`)).json()) as T;
}

beforeAll(async () => {
  await checkViewer(BASE);
  mkdirSync(SHOTS, { recursive: true });
  ({ dictionary, analysis } = await chosenDictionary(BASE));
  const runs = await json<{ runs: { name: string; dictionaries: string[] }[] }>("/api/runs");
  const run = process.env.E2E_SWEEP_RUN ? runs.runs.find((r) => r.name === process.env.E2E_SWEEP_RUN) : runs.runs.find((r) => r.dictionaries.length > 1);
  if (!run || run.dictionaries.length < 2) throw new Error(`No run of several dictionaries at ${BASE} (E2E_SWEEP_RUN=${process.env.E2E_SWEEP_RUN ?? "unset"}).`);
  sweep = run;
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
});

afterAll(async () => {
  await browser?.close();
});

describe("research tools", () => {
  test("token search: a result opens the page of that feature", async () => {
    await page.goto(dictUrl());
    const panel = page.getByTestId("search-panel");
    await panel.getByLabel("Token or phrase").fill(" the");
    await panel.getByRole("button", { name: "Search" }).click();
    await page.waitForURL((u) => u.searchParams.get("q") === " the");
    const results = panel.getByTestId("token-results");
    const first = results.locator("a.feature-link").first();
    await first.waitFor();
    expect(await results.innerText()).toMatch(/id 262/); // GPT-2's " the"
    const index = Number((await first.innerText()).replace("#", ""));
    await screenshot("search-desktop");
    await first.click();
    await page.waitForURL((u) => u.pathname.endsWith(`/features/${index}`));
    expect(await visibleFeatureIndex(page)).toBe(index);
    // That feature fires on " the": its activation there is at most its max, which the page shows.
    const api = await json<{ matches: { index: number; acts: (number | null)[]; max_act: number }[] }>(
      `/api/dictionaries/${enc(dictionary)}/analyses/${enc(analysis)}/search/tokens?q=${enc(" the")}&limit=1`,
    );
    expect(api.matches[0].index).toBe(index);
    expect(api.matches[0].acts[0]).toBeLessThanOrEqual(api.matches[0].max_act);
  });

  test("similar features: the nearest features by decoder direction link to feature pages, also in another dictionary", async () => {
    const start = featureIndexFromUrl(page.url());
    const box = page.getByTestId("similar");
    const link = box.locator("a.feature-link").first();
    await link.waitFor();
    const target = Number((await link.innerText()).replace("#", ""));
    expect(target).not.toBe(start);
    const other = sweep.dictionaries[0];
    await box.getByLabel("Dictionary to search").selectOption(other);
    await box.getByText(/has no analysis yet/).waitFor(); // the sweep's dictionaries are not analysed: no links
    expect(await box.locator("tbody tr").count()).toBeGreaterThan(0);
    await box.getByLabel("Dictionary to search").selectOption(dictionary);
    await box.locator("a.feature-link").first().click();
    await page.waitForURL((u) => u.pathname.endsWith(`/features/${target}`));
    expect(await visibleFeatureIndex(page)).toBe(target);
  });

  test("steering shows the steered and the unsteered continuation", async () => {
    const box = page.getByTestId("steering");
    await box.getByLabel("Prompt to continue").fill("The quick brown fox");
    await box.getByLabel("strength").fill("40");
    await box.getByLabel("new tokens").fill("12");
    await box.getByRole("button", { name: "Steer" }).click();
    const steered = box.getByTestId("steered");
    await steered.waitFor({ timeout: MODEL_TIMEOUT });
    const unsteered = box.getByTestId("unsteered");
    expect(await steered.innerText()).toContain("The quick brown fox");
    expect(await unsteered.innerText()).toContain("The quick brown fox");
    expect(await steered.innerText()).toMatch(/12 tokens|ended/);
    expect(await steered.locator(".generated-text").innerText()).not.toBe(await unsteered.locator(".generated-text").innerText());
    await screenshot("steering-desktop");
  });

  test("a label survives a reload, and a conflicting edit from a second tab is shown, not lost", async () => {
    const index = featureIndexFromUrl(page.url());
    const other = await context.newPage(); // a second tab on the same feature, opened before the first saves
    await other.goto(featureUrl(index));
    const otherEditor = other.getByTestId("annotation");
    await otherEditor.getByLabel("Label").waitFor();

    const editor = page.getByTestId("annotation");
    await editor.getByLabel("Label").fill("first tab's label");
    await editor.getByLabel("Notes").fill("written in the first tab");
    await editor.getByRole("button", { name: "Save" }).click();
    await editor.getByTestId("annotation-status").filter({ hasText: /saved \(version \d+\)/ }).waitFor();
    await page.reload();
    expect(await page.getByTestId("feature-label").innerText()).toContain("first tab's label");
    expect(await page.getByTestId("annotation").getByLabel("Label").inputValue()).toBe("first tab's label");

    await otherEditor.getByLabel("Label").fill("second tab's label");
    await otherEditor.getByRole("button", { name: "Save" }).click();
    const conflict = otherEditor.getByTestId("annotation-conflict");
    await conflict.waitFor();
    expect(await conflict.getByTestId("conflict-label").innerText()).toBe("first tab's label");
    expect(await conflict.innerText()).toContain("written in the first tab");
    expect(await otherEditor.getByLabel("Label").inputValue()).toBe("second tab's label"); // the edit is kept on screen
    await screenshot("label-conflict-desktop", other);
    // Nothing was overwritten: the first tab's label is what the server has.
    await page.reload();
    expect(await page.getByTestId("feature-label").innerText()).toContain("first tab's label");
    // Saving on purpose over it works, and the first tab sees it after a reload.
    await conflict.getByRole("button", { name: "Save mine over theirs" }).click();
    await otherEditor.getByTestId("annotation-status").filter({ hasText: /saved/ }).waitFor();
    await page.reload();
    expect(await page.getByTestId("feature-label").innerText()).toContain("second tab's label");
    await other.close();

    // The label shows in the feature table and label search finds it.
    await page.goto(`${dictUrl()}&search=label&q=${enc("second tab")}`);
    const found = page.getByTestId("label-results").locator(`tr[data-feature="${index}"]`);
    await found.waitFor();
    await page.getByRole("checkbox", { name: /bookmarked only/ }).waitFor();
  });

  test("the sweep's run page: one scatter point per dictionary, each opening its dictionary", async () => {
    await page.goto(`${BASE}/`);
    const runLink = page.locator(`tr[data-dictionary="${sweep.dictionaries[0]}"] a.run-link`);
    await runLink.click();
    await page.waitForURL((u) => u.pathname === `/runs/${enc(sweep.name)}`);
    await page.getByTestId("run-state").filter({ hasText: "finished" }).waitFor();
    const plots = page.getByTestId("scatter");
    await plots.first().waitFor();
    expect(await plots.count()).toBe(2);
    for (let i = 0; i < 2; i++) expect(await plots.nth(i).locator("[data-point]").count()).toBe(sweep.dictionaries.length);
    const chart = page.getByTestId("line-chart").first();
    await chart.locator("canvas").first().waitFor(); // uPlot drew the curves
    // Hovering a chart reads out the point under the cursor in short numbers (the run trained 3,840 tokens).
    await chart.locator(".u-over").hover();
    const readout = await chart.getByTestId("chart-readout").innerText();
    expect(readout).toMatch(/^training tokens \d+(\.\d+)?k: \S+ \d/);
    await screenshot("run-desktop");
    const target = sweep.dictionaries[sweep.dictionaries.length - 1];
    await plots.first().locator(`[data-point="${target}"] circle`).click();
    await page.waitForURL((u) => decodeURIComponent(u.pathname) === `/dictionaries/${target}`);
    await page.getByRole("heading", { name: target.replace(":", " / "), level: 1 }).waitFor();
  });

  test.skipIf(!process.env.E2E_IMPORTED)("an imported dictionary says where it came from, also in a narrow window", async () => {
    const imported = process.env.E2E_IMPORTED!;
    await page.goto(`${BASE}/`);
    const row = page.locator(`tr[data-dictionary="${imported}"]`);
    await row.getByTestId("source-tag").filter({ hasText: "from SAELens" }).waitFor();
    expect(await page.getByTestId("source-tag").count()).toBe(1); // the dictionaries trained here have none
    await row.getByRole("link", { name: imported.replace(":", " / ") }).click();
    await page.waitForURL((u) => decodeURIComponent(u.pathname) === `/dictionaries/${imported}`);
    const card = page.getByTestId("provenance");
    await card.getByRole("heading", { name: /^Imported from SAELens \d/ }).waitFor();
    await card.getByText("Imported from", { exact: true }).waitFor();
    await screenshot("imported-dictionary");
    const narrow = await browser.newContext({ viewport: { width: 420, height: 900 } });
    const p = await narrow.newPage();
    await p.goto(`${BASE}/dictionaries/${enc(imported)}`);
    await p.getByTestId("provenance").waitFor();
    const { scroll, client } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
    expect(scroll, "the provenance card is wider than a narrow window").toBeLessThanOrEqual(client + 1);
    await narrow.close();
  });

  test("the new panels fit a narrow window", async () => {
    const narrow = await browser.newContext({ viewport: { width: 420, height: 900 } });
    const p = await narrow.newPage();
    for (const url of [featureUrl(3), `${BASE}/runs/${enc(sweep.name)}`, `${dictUrl()}&q=${enc(" the")}`]) {
      await p.goto(url);
      await p.locator("main h1").first().waitFor();
      await p.waitForLoadState("networkidle");
      const { scroll, client } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
      expect(scroll, `${url} is wider than the window`).toBeLessThanOrEqual(client + 1);
    }
    await screenshot("run-narrow", p);
    await narrow.close();
  });
});
