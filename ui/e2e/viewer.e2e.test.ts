// End-to-end: a real browser drives the built viewer served by a real API server.
// Env: VIEWER_URL (required), E2E_DICTIONARY and E2E_ANALYSIS (default: the first dictionary
// with an analysis). Screenshots go to ui/screenshots/.
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { launchBrowser } from "./browser";
import { checkViewer, chosenDictionary, viewerUrl } from "./env";
import { fmt, fmtInt } from "../src/format";

const BASE = viewerUrl();
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "..", "screenshots");
const DESKTOP = { width: 1280, height: 900 };
const NARROW = { width: 420, height: 900 };
const MODEL_TIMEOUT = 90_000; // the first activations request loads the model

let browser: Browser;
let context: BrowserContext;
let page: Page;
let dictionary: string;
let analysis: string;
let dSae: number;

const enc = encodeURIComponent;
const dictUrl = () => `${BASE}/dictionaries/${enc(dictionary)}?analysis=${enc(analysis)}`;
const featureUrl = (i: number | string) => `${BASE}/dictionaries/${enc(dictionary)}/analyses/${enc(analysis)}/features/${i}`;
const featureIndexFromUrl = (url: string) => Number(/\/features\/(\d+)$/.exec(new URL(url).pathname)?.[1] ?? NaN);

async function screenshot(name: string, p: Page = page) {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Fail if the page itself scrolls sideways (token rows and tables may scroll inside their boxes). */
async function expectNoHorizontalPageScroll(p: Page) {
  const { scroll, client } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  expect(scroll, "page is wider than the window").toBeLessThanOrEqual(client + 1);
}

async function visibleFeatureIndex(p: Page): Promise<number> {
  const body = p.getByTestId("feature-body");
  await body.waitFor();
  return Number(await body.getAttribute("data-feature"));
}

async function tableIndices(p: Page): Promise<number[]> {
  const cells = await p.locator(".feature-table tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.getAttribute("data-feature"))));
  return cells;
}

async function waitForTableNotStale(p: Page) {
  await p.locator(".feature-table tbody tr").first().waitFor();
  await p.waitForFunction(() => !document.querySelector(".stale"));
}

beforeAll(async () => {
  await checkViewer(BASE);
  mkdirSync(SHOTS, { recursive: true });
  ({ dictionary, analysis, dSae } = await chosenDictionary(BASE));
  browser = await launchBrowser();
  context = await browser.newContext({ viewport: DESKTOP });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
});

afterAll(async () => {
  await browser?.close();
});

describe("viewer", () => {
  test("dictionaries page lists the dictionary with its metrics and analyses", async () => {
    await page.goto(`${BASE}/`);
    const row = page.locator(`tr[data-dictionary="${dictionary}"]`);
    await row.waitFor();
    expect(await row.locator("td").nth(5).innerText()).toMatch(/\d/); // d_sae
    expect(await row.locator("td").first().innerText()).toBe(dictionary.replace(":", " / ")); // the id as run / name
    await row.getByRole("link", { name: analysis, exact: true }).waitFor();
    await screenshot("dictionaries-desktop");
  });

  test("dictionary page shows metrics, density histogram, dead/alive counts and the feature table", async () => {
    await page.locator(`tr[data-dictionary="${dictionary}"]`).getByRole("link", { name: analysis, exact: true }).click();
    await page.waitForURL((u) => u.pathname === `/dictionaries/${enc(dictionary)}` && u.searchParams.get("analysis") === analysis);
    await page.getByRole("heading", { name: dictionary.replace(":", " / "), level: 1 }).waitFor();
    // The dictionary was evaluated when it was saved: the grid shows its metrics (L0 as the server has it).
    const detail = await (await fetch(`${BASE}/api/dictionaries/${enc(dictionary)}`)).json();
    expect(typeof detail.metrics.l0, "the e2e dictionary must have evaluation metrics").toBe("number");
    const metrics = page.getByTestId("metrics");
    await metrics.waitFor();
    expect(await page.getByText("No evaluation metrics").count()).toBe(0);
    expect(await metrics.locator(".stat", { hasText: "L0" }).locator("dd").innerText()).toBe(fmt(detail.metrics.l0, 4)); // as MetricsGrid writes L0
    const summary = detail.analysis_summaries.find((a: { name: string }) => a.name === analysis);
    expect(summary.n_alive, "the e2e analysis must have alive features").toBeGreaterThan(0);
    expect(await page.getByTestId("n-alive").innerText()).toContain(fmtInt(summary.n_alive));
    expect(await page.getByTestId("n-dead").innerText()).toContain(fmtInt(summary.n_dead));
    // Alive features: the density histogram is drawn, not the empty note.
    const densityPlot = page.locator('figure[aria-label="Feature density histogram"]');
    await densityPlot.locator("canvas").first().waitFor();
    expect(await densityPlot.locator(".histogram-empty").count()).toBe(0);
    await waitForTableNotStale(page);
    expect((await tableIndices(page)).length).toBeGreaterThan(0);
    expect(await page.getByTestId("page-info").innerText()).toMatch(/of/);
    await screenshot("dictionary-desktop");
  });

  test("sorting the feature table changes the order and the URL", async () => {
    const before = await tableIndices(page);
    await page.locator('button[data-sort="index"]').click();
    await page.waitForURL((u) => u.searchParams.get("sort") === "index" && u.searchParams.get("order") === "asc");
    await waitForTableNotStale(page);
    await expect.poll(() => tableIndices(page)).not.toEqual(before);
    const asc = await tableIndices(page);
    expect(asc).toEqual([...asc].sort((a, b) => a - b));
    expect(asc[0]).toBe(0);
    await page.locator('button[data-sort="index"]').click();
    await page.waitForURL((u) => u.searchParams.get("sort") === "index" && u.searchParams.get("order") === "desc");
    await expect.poll(async () => (await tableIndices(page))[0]).toBe(dSae - 1);
    // back to the strongest features first, for the next tests
    await page.locator('button[data-sort="max_act"]').click();
    await page.waitForURL((u) => u.searchParams.get("sort") === "max_act" && u.searchParams.get("order") === "desc");
    await waitForTableNotStale(page);
    const maxActs = await page.locator(".feature-table tbody tr td:nth-child(3)").allInnerTexts();
    const values = maxActs.map(Number);
    expect(values.length).toBeGreaterThan(1);
    expect(values.every((v) => Number.isFinite(v)), `max_act cells that are not numbers: ${maxActs.join(" ")}`).toBe(true);
    expect(values).toEqual([...values].sort((a, b) => b - a));
  });

  test("custom text on the dictionary page shows tokens and their top features", async () => {
    const box = page.getByTestId("text-activations");
    await box.locator("textarea").fill("The cat sat on the mat.\nIt was happy.");
    await box.getByRole("button", { name: "Run" }).click();
    const rows = box.locator('[data-testid="token-table"] tbody tr');
    await rows.first().waitFor({ timeout: MODEL_TIMEOUT });
    expect(await rows.count()).toBeGreaterThan(3);
    expect(await box.locator(".context .tok").count()).toBe(await rows.count());
    expect(await box.locator(".context").innerText()).toContain("↵"); // the newline is visible
    expect(await box.locator("a.chip").count()).toBeGreaterThan(0);
    await screenshot("dictionary-text-desktop");
  });

  test("a table row opens the feature page", async () => {
    const first = page.locator(".feature-table tbody tr a.feature-link").first();
    const href = await first.getAttribute("href");
    await first.click();
    await page.waitForURL((u) => u.pathname === href);
    const idx = featureIndexFromUrl(page.url());
    expect(await visibleFeatureIndex(page)).toBe(idx);
    await page.getByRole("heading", { name: new RegExp(`Feature #${idx}`) }).waitFor();
  });

  test("top contexts highlight tokens in proportion to activation, with a hover title", async () => {
    const top = page.getByTestId("top-contexts");
    const hot = top.locator(".tok-on");
    await hot.first().waitFor();
    const maxTok = top.locator(".tok-max").first();
    const intensity = Number(await maxTok.getAttribute("data-intensity"));
    expect(intensity).toBeGreaterThan(0.5);
    expect(await maxTok.evaluate((el) => getComputedStyle(el).backgroundColor)).toMatch(/rgba?\(/);
    await maxTok.hover();
    const title = (await maxTok.getAttribute("title")) ?? "";
    expect(title).toMatch(/activation: /);
    expect(title).toMatch(/position: \d+/);
    // intensities are act / feature max, so no token is above 1 and the unlit ones are 0
    const all = await top.locator(".tok").evaluateAll((els) => els.map((e) => Number(e.getAttribute("data-intensity"))));
    expect(Math.max(...all)).toBeLessThanOrEqual(1);
    expect(Math.min(...all)).toBeGreaterThanOrEqual(0);
    await page.getByTestId("logit-lens").waitFor();
    await page.getByTestId("intervals").waitFor();
    // The strongest feature has interval samples, and the page shows each of its intervals.
    const feature = await (
      await fetch(`${BASE}/api/dictionaries/${enc(dictionary)}/analyses/${enc(analysis)}/features/${featureIndexFromUrl(page.url())}`)
    ).json();
    const sampled = feature.intervals.filter((g: { samples: unknown[] }) => g.samples.length > 0).length;
    expect(sampled, "the feature has interval samples").toBeGreaterThan(0);
    const groups = page.getByTestId("interval-group");
    expect(await groups.count()).toBe(feature.intervals.length);
    expect(await groups.first().locator(".interval-bounds").innerText()).toMatch(/\[.*,.*\]/);
    await screenshot("feature-desktop");
  });

  test("next / previous / typed index / random navigate to the chosen index", async () => {
    const start = featureIndexFromUrl(page.url());
    const stepUp = start < dSae - 1;
    await page.getByRole("button", { name: stepUp ? "Next feature" : "Previous feature" }).click();
    const stepped = stepUp ? start + 1 : start - 1;
    await page.waitForURL((u) => u.pathname.endsWith(`/features/${stepped}`));
    expect(await visibleFeatureIndex(page)).toBe(stepped);
    await page.getByRole("button", { name: stepUp ? "Previous feature" : "Next feature" }).click();
    await page.waitForURL((u) => u.pathname.endsWith(`/features/${start}`));
    expect(await visibleFeatureIndex(page)).toBe(start);

    const typed = start === 1 ? 2 : 1;
    await page.getByLabel("Feature index").fill(String(typed));
    await page.getByLabel("Feature index").press("Enter");
    await page.waitForURL((u) => u.pathname.endsWith(`/features/${typed}`));
    await expect.poll(() => visibleFeatureIndex(page)).toBe(typed);

    // Random asks the server for an alive feature and opens it (it may be the one on screen).
    const answer = page.waitForResponse((r) => r.url().includes("/features/random") && r.request().method() === "GET");
    await page.getByRole("button", { name: "Random" }).click();
    const chosen = (await (await answer).json()) as { index: number; act_count: number };
    expect(chosen.act_count).toBeGreaterThan(0);
    expect(chosen.index).toBeLessThan(dSae);
    await page.waitForURL((u) => u.pathname.endsWith(`/features/${chosen.index}`));
    await expect.poll(() => visibleFeatureIndex(page)).toBe(chosen.index);
  });

  test("the feature's custom input shows its activation on typed text", async () => {
    const box = page.getByTestId("feature-input");
    await box.locator("textarea").fill("The quick brown fox jumps over the lazy dog.\n\tNew York");
    await box.getByRole("button", { name: "Run" }).click();
    const summary = box.getByTestId("feature-input-summary");
    await summary.waitFor({ timeout: MODEL_TIMEOUT });
    expect(await summary.innerText()).toMatch(/Max activation|does not fire/);
    expect(await box.locator(".context .tok").count()).toBeGreaterThan(5);
    expect(await box.locator(".context").innerText()).toContain("→"); // the tab is visible
    await screenshot("feature-input-desktop");
  });

  test("an unknown feature index shows the server's 404 explanation", async () => {
    await page.goto(featureUrl(dSae + 1000));
    const alert = page.getByRole("alert").first();
    await alert.waitFor();
    const text = await alert.innerText();
    expect(text).toMatch(/Not found/);
    expect(text.replace(/Not found:?/, "").trim().length).toBeGreaterThan(5);
    await page.goto(featureUrl("abc"));
    expect(await page.getByRole("alert").first().innerText()).toMatch(/not a feature index/);
  });

  test("an unknown dictionary shows the server's 404 explanation", async () => {
    await page.goto(`${BASE}/dictionaries/no-such-dictionary-e2e`);
    expect(await page.getByRole("alert").first().innerText()).toMatch(/Not found/);
  });

  test("a deep link to a feature loads directly in a fresh browser context", async () => {
    const fresh = await browser.newContext({ viewport: DESKTOP });
    const p = await fresh.newPage();
    const idx = Math.min(dSae - 1, 3);
    const response = await p.goto(featureUrl(idx));
    expect(response?.status()).toBe(200);
    expect(await visibleFeatureIndex(p)).toBe(idx);
    await fresh.close();
  });

  test("a server that cannot be reached gives a clear message", async () => {
    const p = await context.newPage();
    await p.route("**/api/**", (route) => route.abort("connectionrefused"));
    await p.goto(`${BASE}/`);
    expect(await p.getByRole("alert").first().innerText()).toMatch(/Cannot reach the server at/);
    await p.close();
  });

  test("pages fit a narrow window without horizontal page scroll", async () => {
    const narrow = await browser.newContext({ viewport: NARROW });
    const p = await narrow.newPage();
    p.setDefaultTimeout(20_000);
    await p.goto(`${BASE}/`);
    await p.locator(`tr[data-dictionary="${dictionary}"]`).waitFor();
    await expectNoHorizontalPageScroll(p);
    await screenshot("dictionaries-narrow", p);

    await p.goto(dictUrl());
    await waitForTableNotStale(p);
    await expectNoHorizontalPageScroll(p);
    await screenshot("dictionary-narrow", p);

    const first = await p.locator(".feature-table tbody tr").first().getAttribute("data-feature");
    await p.goto(featureUrl(first!));
    await visibleFeatureIndex(p);
    await p.getByTestId("top-contexts").locator(".tok").first().waitFor();
    await expectNoHorizontalPageScroll(p);
    await screenshot("feature-narrow", p);
    await narrow.close();
  });
});
