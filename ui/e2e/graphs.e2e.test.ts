// End-to-end: attribution graphs in a real browser against a real server. E2E_GRAPH_DICTIONARY is a
// replacement model with an analysis and a saved graph E2E_GRAPH (the pytest suite makes both: a
// transcoder set of the tiny GPT-2's block 1). The graph page draws nodes and edges; hover, click (the
// feature card), the threshold slider, pinning and supernodes (saved, surviving a reload) and an
// intervention work; a new graph computed from the dictionary page opens when its job is done.
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { launchBrowser } from "./browser";
import { checkViewer, viewerUrl } from "./env";

const BASE = viewerUrl();
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "..", "screenshots");
const MODEL_TIMEOUT = 90_000; // a graph job loads the model first
const enc = encodeURIComponent;

let browser: Browser;
let page: Page;
let dictionary: string;
let slug: string;

const nodes = (p: Page, kind?: string) => p.locator(`[data-testid="graph-node"]${kind ? `[data-kind="${kind}"]` : ""}`);

async function setSlider(p: Page, value: number) {
  await p.getByLabel("Node threshold").evaluate((el, v) => {
    const input = el as HTMLInputElement;
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value")!.set!.call(input, String(v));
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }, value);
}

beforeAll(async () => {
  await checkViewer(BASE);
  mkdirSync(SHOTS, { recursive: true });
  dictionary = process.env.E2E_GRAPH_DICTIONARY ?? "";
  slug = process.env.E2E_GRAPH ?? "";
  if (!dictionary || !slug) throw new Error("Set E2E_GRAPH_DICTIONARY (a replacement model served by the viewer) and E2E_GRAPH (one of its saved graphs).");
  browser = await launchBrowser();
  page = await (await browser.newContext({ viewport: { width: 1400, height: 950 } })).newPage();
  page.setDefaultTimeout(20_000);
});

afterAll(async () => {
  await browser?.close();
});

describe("attribution graphs", () => {
  test("the replacement model's page lists its graphs; one opens with nodes, edges, tokens and logits", async () => {
    await page.goto(`${BASE}/dictionaries/${enc(dictionary)}`);
    const list = page.getByTestId("graph-list");
    await list.getByRole("link", { name: slug, exact: true }).click();
    await page.waitForURL((u) => u.pathname === `/dictionaries/${enc(dictionary)}/graphs/${enc(slug)}`);
    await page.getByTestId("graph-canvas").waitFor();
    const api = (await (await fetch(`${BASE}/api/dictionaries/${enc(dictionary)}/graphs/${enc(slug)}`)).json()) as {
      metadata: { prompt_tokens: string[] }; nodes: unknown[]; links: unknown[];
    };
    expect(await nodes(page).count()).toBe(api.nodes.length);
    expect(await page.getByTestId("graph-edge").count()).toBe(api.links.length);
    expect(await nodes(page, "cross layer transcoder").count()).toBeGreaterThan(0);
    expect(await nodes(page, "logit").count()).toBeGreaterThan(0);
    expect(await page.getByTestId("graph-token").allTextContents()).toEqual(api.metadata.prompt_tokens);
    await page.screenshot({ path: join(SHOTS, "graph-desktop.png"), fullPage: true });
  });

  test("hovering a node shows its label, activation and influence; clicking opens its feature card", async () => {
    const feature = nodes(page, "cross layer transcoder").first();
    await feature.hover();
    const tip = page.getByTestId("graph-tooltip");
    await tip.waitFor();
    expect(await tip.innerText()).toMatch(/feature \d+ of layer 1[\s\S]*activation [\d.]+[\s\S]*influence \(cumulative\) [\d.]+/);
    await feature.click();
    const card = page.getByTestId("feature-card");
    await card.getByTestId("sample").first().waitFor();
    const link = card.getByTestId("feature-page-link");
    const href = await link.getAttribute("href");
    expect(href).toMatch(/\/analyses\/default\/features\/\d+$/);
    await link.click();
    await page.waitForURL((u) => u.pathname === href);
    await page.getByTestId("feature-body").waitFor();
    await page.goBack();
    await page.getByTestId("graph-canvas").waitFor();
  });

  test("the node threshold slider re-prunes on the client", async () => {
    const before = await nodes(page).count();
    await setSlider(page, 0.1);
    await expect.poll(() => nodes(page).count()).toBeLessThan(before);
    expect(await page.getByTestId("threshold-value").innerText()).toBe("0.10");
    expect(await nodes(page, "embedding").count()).toBeGreaterThan(0); // tokens always stay
    await setSlider(page, 1);
    await expect.poll(() => nodes(page).count()).toBe(before);
  });

  test("pinned nodes grouped into a supernode are saved with the graph and survive a reload", async () => {
    const features = nodes(page, "cross layer transcoder");
    const ids = [await features.nth(0).getAttribute("data-node-id"), await features.nth(1).getAttribute("data-node-id")];
    await features.nth(0).click({ modifiers: ["Shift"] });
    await features.nth(1).click({ modifiers: ["Shift"] });
    const panel = page.getByTestId("subgraph-panel");
    expect(await panel.locator("[data-testid=pinned-list] li").count()).toBe(2);
    for (const box of await panel.getByRole("checkbox").all()) await box.check();
    await panel.getByLabel("Supernode name").fill("cat features");
    await panel.getByRole("button", { name: "Group checked" }).click();
    await panel.getByRole("button", { name: "Save subgraph" }).click();
    await panel.getByRole("button", { name: "Saved" }).waitFor();
    await page.getByLabel("Pinned nodes only").check();
    expect(await nodes(page, "cross layer transcoder").count()).toBe(2);
    await page.reload();
    await page.getByTestId("graph-canvas").waitFor();
    const supernode = page.getByTestId("supernode");
    expect(await supernode.innerText()).toMatch(/cat features\s*\(2 nodes\)/);
    expect(await page.locator("[data-testid=pinned-list] li").evaluateAll((li) => li.map((e) => e.getAttribute("data-node-id")))).toEqual(ids);
    const saved = (await (await fetch(`${BASE}/api/dictionaries/${enc(dictionary)}/graphs/${enc(slug)}`)).json()) as {
      qParams: { supernodes: string[][] };
    };
    expect(saved.qParams.supernodes).toEqual([["cat features", ...ids]]);
  });

  test("ablating the pinned features shows the new next tokens beside the original ones", async () => {
    const panel = page.getByTestId("intervention-panel");
    await panel.getByRole("button", { name: "Run" }).click();
    const table = panel.getByTestId("intervention-result");
    await table.waitFor({ timeout: MODEL_TIMEOUT });
    expect(await table.locator("tbody tr").count()).toBe(8);
    await page.screenshot({ path: join(SHOTS, "graph-intervention-desktop.png"), fullPage: true });
  });

  test("a new graph is computed as a job from the dictionary page and opens when done", async () => {
    await page.goto(`${BASE}/dictionaries/${enc(dictionary)}`);
    const list = page.getByTestId("graph-list");
    await list.getByLabel("Prompt").fill("The dog ran to the");
    await list.getByRole("button", { name: "Compute graph" }).click();
    const job = list.getByTestId("graph-job");
    await job.and(page.locator('[data-status="done"]')).waitFor({ timeout: MODEL_TIMEOUT });
    await list.getByRole("link", { name: "open the-dog-ran-to-the" }).click();
    await page.getByTestId("graph-canvas").waitFor();
    expect(await page.getByTestId("graph-prompt").innerText()).toBe("The dog ran to the");
    expect(await nodes(page).count()).toBeGreaterThan(5);
  });
});
