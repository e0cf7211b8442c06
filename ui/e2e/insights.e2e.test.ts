// End-to-end: explanations, replacement models and the compare page in a real browser against a real
// server: search by explanation, sorting by a score, a feature's explanation with its scores, "explain this
// feature" as a job; a cross-layer transcoder's per-layer evaluation and a feature's decoder norms per target
// layer; a run's compare page with its points, Pareto frontier and links. Env as viewer.e2e.test.ts, plus
// E2E_SWEEP_RUN (a run of several evaluated dictionaries), E2E_REPLACEMENT (a cross-layer transcoder's id) and
// E2E_EXPLAINED (a dictionary whose analysis E2E_ANALYSIS has scored explanations; default E2E_DICTIONARY);
// explaining needs the server's explainer (GPT2DICT_EXPLAIN_*) to answer in seconds.
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { launchBrowser } from "./browser";
import { checkViewer, chosenDictionary, viewerUrl } from "./env";

const BASE = viewerUrl();
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "..", "screenshots");
const JOB_TIMEOUT = 90_000;

let browser: Browser;
let page: Page;
let explained: string;
let analysis: string;

const enc = encodeURIComponent;
const analysisApi = () => `/api/dictionaries/${enc(explained)}/analyses/${enc(analysis)}`;
const featureUrl = (name: string, i: number) => `${BASE}/dictionaries/${enc(name)}/analyses/${enc(analysis)}/features/${i}`;

async function json<T>(path: string): Promise<T> {
  const r = await fetch(`${BASE}${path}`);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

async function screenshot(name: string, p: Page = page) {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function fitsNarrowWindow(url: string, ready: string) {
  const narrow = await browser.newContext({ viewport: { width: 420, height: 900 } });
  const p = await narrow.newPage();
  await p.goto(url);
  await p.getByTestId(ready).first().waitFor();
  await p.waitForLoadState("networkidle");
  const { scroll, client } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  expect(scroll, `${url} is wider than a narrow window`).toBeLessThanOrEqual(client + 1);
  await narrow.close();
}

interface Row {
  index: number;
  explanation: string | null;
  detection: number | null;
}

beforeAll(async () => {
  await checkViewer(BASE);
  mkdirSync(SHOTS, { recursive: true });
  ({ dictionary: explained, analysis } = await chosenDictionary(BASE));
  explained = process.env.E2E_EXPLAINED ?? explained;
  browser = await launchBrowser();
  page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.setDefaultTimeout(20_000);
});

afterAll(async () => {
  await browser?.close();
});

describe("explanations", () => {
  test("search by explanation: a result opens its feature, whose page shows that explanation and its scores", async () => {
    const rows = (await json<{ features: Row[] }>(`${analysisApi()}/features?sort=index&order=asc&limit=500`)).features;
    const first = rows.find((r) => r.explanation)!;
    const word = first.explanation!.split(/\W+/).find((w) => w.length > 2)!;
    await page.goto(`${BASE}/dictionaries/${enc(explained)}?analysis=${enc(analysis)}`);
    expect(await page.getByTestId("explanations-summary").innerText()).toMatch(/\d+ features explained by/);
    const panel = page.getByTestId("search-panel");
    await panel.getByRole("tab", { name: "Explanation" }).click();
    await panel.getByLabel("Explanation words").fill(word);
    await panel.getByRole("button", { name: "Search" }).click();
    const results = panel.getByTestId("explanation-results");
    await results.locator("mark").first().waitFor();
    const api = await json<{ matches: { index: number; explanation: string }[] }>(`${analysisApi()}/search/explanations?q=${enc(word)}&limit=50`);
    expect(await results.locator("tbody tr").count()).toBe(api.matches.length);
    expect((await results.locator("mark").first().innerText()).toLowerCase()).toContain(word.toLowerCase().slice(0, 3));
    await screenshot("explanation-search-desktop");
    const target = api.matches[0];
    await results.locator(`tr[data-feature="${target.index}"] a.feature-link`).click();
    await page.waitForURL((u) => u.pathname.endsWith(`/features/${target.index}`));
    const box = page.getByTestId("explanation");
    expect(await box.getByTestId("explanation-text").first().innerText()).toBe(target.explanation);
    const scores = box.getByTestId("explanation-scores");
    await scores.waitFor();
    expect(await scores.locator("tbody tr").count()).toBe(2); // detection and fuzzing
    await screenshot("feature-explanation-desktop");
  });

  test("sorting the feature table by a score: only scored features, best first", async () => {
    await page.goto(`${BASE}/dictionaries/${enc(explained)}?analysis=${enc(analysis)}`);
    await page.getByRole("button", { name: /Detection/ }).click();
    await page.waitForURL((u) => u.searchParams.get("sort") === "detection");
    const cells = page.locator('.feature-table td[data-score="detection"]');
    await page.waitForFunction(() => !document.querySelector(".stale"));
    const api = await json<{ total: number; features: Row[] }>(`${analysisApi()}/features?sort=detection&order=desc&limit=50`);
    await page.getByTestId("page-info").filter({ hasText: `of ${api.total}` }).waitFor();
    const shown = (await cells.allInnerTexts()).map(Number);
    expect(shown).toEqual(api.features.map((f) => Number(f.detection!.toFixed(2))));
    expect(shown).toEqual([...shown].sort((a, b) => b - a));
  });

  test("explain this feature: a job runs, shows its progress, and the explanation appears with its scores", async () => {
    const rows = (await json<{ features: (Row & { act_count: number })[] }>(`${analysisApi()}/features?sort=index&order=asc&limit=500`)).features;
    const target = rows.find((r) => !r.explanation && r.act_count > 0)!;
    await page.goto(featureUrl(explained, target.index));
    const box = page.getByTestId("explanation");
    await box.getByText("No explanation yet.").waitFor();
    await box.getByRole("button", { name: "Explain this feature" }).click();
    await box.getByTestId("job-progress").waitFor();
    await box.getByText(/Explained in \d+ s\./).waitFor({ timeout: JOB_TIMEOUT });
    const text = box.getByTestId("explanation-text").first();
    await text.waitFor();
    const api = await json<{ explanations: { explanation: string; scores: unknown[] }[] }>(`${analysisApi()}/features/${target.index}/explanations`);
    expect(await text.innerText()).toBe(api.explanations[0].explanation);
    await box.getByTestId("explanation-scores").waitFor();
    expect(api.explanations[0].scores).toHaveLength(2);
  });
});

describe("a replacement model", () => {
  const clt = () => process.env.E2E_REPLACEMENT!;

  test.skipIf(!process.env.E2E_REPLACEMENT)("its page: kind and layers, the evaluation per layer as a table and plots", async () => {
    const detail = await json<{ layers: number[]; layer_metrics: { layer: number; l0: number }[] }>(`/api/dictionaries/${enc(clt())}`);
    await page.goto(`${BASE}/`);
    const row = page.locator(`tr[data-dictionary="${clt()}"]`);
    expect(await row.innerText()).toContain("cross-layer transcoder");
    await row.getByRole("link", { name: clt().replace(":", " / ") }).click();
    const table = page.getByTestId("layer-table");
    await table.waitFor();
    expect(await table.locator("tbody tr").count()).toBe(detail.layers.length);
    const plots = page.getByTestId("layer-plot");
    expect(await plots.count()).toBe(3);
    for (let i = 0; i < 3; i++) expect(await plots.nth(i).locator("g.layer-bar rect").count()).toBe(detail.layers.length);
    const l0 = await plots.nth(2).locator("g.layer-bar title").allTextContents();
    expect(l0[0]).toBe(`layer ${detail.layers[0]}: ${Number(detail.layer_metrics[0].l0.toPrecision(3))}`);
    await screenshot("replacement-dictionary-desktop");
  });

  test.skipIf(!process.env.E2E_REPLACEMENT)("a feature's layer and its decoder norm per target layer, beside the logit lens", async () => {
    const detail = await json<{ d_sae: number; layers: number[] }>(`/api/dictionaries/${enc(clt())}`);
    const index = 3; // a feature of the first layer: it writes to every covered layer
    const place = await json<{ target_layers: number[]; decoder_norms: number[] }>(`/api/dictionaries/${enc(clt())}/features/${index}/replacement`);
    await page.goto(featureUrl(clt(), index));
    expect(await page.getByTestId("feature-layer").innerText()).toBe(`layer ${detail.layers[0]} · #${index} of the layer`);
    const norms = page.getByTestId("decoder-norms");
    await norms.waitFor();
    expect(await norms.locator("tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.getAttribute("data-layer"))))).toEqual(detail.layers);
    const titles = await norms.locator(".norm-bar").evaluateAll((bars) => bars.map((b) => b.getAttribute("title")));
    expect(titles).toEqual(place.target_layers.map((l, i) => `decoder norm into layer ${l}: ${place.decoder_norms[i]}`));
    expect(await page.getByTestId("steering").count()).toBe(0);
    await screenshot("replacement-feature-desktop");
    await fitsNarrowWindow(featureUrl(clt(), index), "decoder-norms");
  });
});

describe("the compare page", () => {
  test("a run's page links to it: every plot's points link to their dictionary, the Pareto frontier is drawn", async () => {
    const runs = await json<{ runs: { name: string; dictionaries: string[] }[] }>("/api/runs");
    const run = runs.runs.find((r) => r.name === process.env.E2E_SWEEP_RUN) ?? runs.runs.find((r) => r.dictionaries.length > 1)!;
    const api = await json<{ plots: { key: string; points: { dictionary: string; pareto: boolean }[]; excluded: string[] }[] }>(
      `/api/compare?run=${enc(run.name)}`,
    );
    await page.goto(`${BASE}/runs/${enc(run.name)}`);
    await page.getByTestId("compare-link").click();
    await page.waitForURL((u) => u.pathname === "/compare" && u.searchParams.get("run") === run.name);
    await page.getByTestId("compare-metrics").waitFor();
    for (const plot of api.plots) {
      const figure = page.locator(`[data-plot="${plot.key}"]`);
      const points = figure.locator("[data-point]");
      expect(await points.count(), plot.key).toBe(plot.points.length);
      const pareto = await points.evaluateAll((ps) => ps.map((p) => [p.getAttribute("data-point"), p.getAttribute("data-pareto")]));
      expect(pareto).toEqual(plot.points.map((p) => [p.dictionary, String(p.pareto)]));
      const front = plot.points.filter((p) => p.pareto).length;
      expect(await figure.getByTestId("pareto-line").count(), plot.key).toBe(front > 1 ? 1 : 0);
      if (front > 1) {
        const line = (await figure.getByTestId("pareto-line").getAttribute("points"))!.trim().split(/\s+/);
        expect(line).toHaveLength(front);
      }
      if (plot.excluded.length) expect(await figure.getByTestId("plot-excluded").innerText()).toContain("another config");
    }
    expect(api.plots.find((p) => p.key === "explained_variance")!.points.length).toBe(run.dictionaries.length);
    await screenshot("compare-desktop");
    const target = api.plots[0].points[0].dictionary;
    await page.locator(`[data-plot="explained_variance"] [data-point="${target}"] circle`).click();
    await page.waitForURL((u) => decodeURIComponent(u.pathname) === `/dictionaries/${target}`);
    await fitsNarrowWindow(`${BASE}/compare?run=${enc(run.name)}`, "compare-metrics");
  });
});
