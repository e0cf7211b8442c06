import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, test } from "vitest";
import type { Job } from "../../api";
import { annotation, dictionaryDetail, explanationsSummary, featureDetail, featureExplanations, featurePage, noExplanations, similar } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

const explainedDetail = {
  ...dictionaryDetail,
  analysis_summaries: [{ ...dictionaryDetail.analysis_summaries[0], explanations: explanationsSummary }],
};
const explainedPage = {
  ...featurePage,
  explanations: explanationsSummary,
  features: [
    { ...featurePage.features[0], explanation: "import statements", detection: 0.91, fuzzing: 0.78 },
    { ...featurePage.features[1], explanation: "the word 'the'", detection: 0.55, fuzzing: null },
    featurePage.features[2],
  ],
};
const base = "/api/dictionaries/gpt2-res6";
const featureRoutes = (explanations: unknown) => [
  { path: /^\/api\/dictionaries\/gpt2-res6$/, body: explainedDetail },
  { path: /\/features\/42\/annotation$/, body: annotation({ label: "brackets" }) },
  { path: /\/features\/42\/similar/, body: similar },
  { path: /\/analyses\/default\/features\/42$/, body: featureDetail },
  { path: /\/analyses\/default\/features\/42\/explanations$/, body: explanations },
];

describe("explanations", () => {
  test("the dictionary page: who explained, mean scores, and the table's explanation and score columns", async () => {
    stubServer([
      { path: /^\/api\/dictionaries\/gpt2-res6$/, body: explainedDetail },
      { path: /\/features\?/, body: explainedPage },
    ]);
    renderAt("/dictionaries/gpt2-res6");
    const summary = await screen.findByTestId("explanations-summary");
    expect(summary).toHaveTextContent("500 features explained by meta-llama/Llama-3.1-8B-Instruct");
    expect(summary).toHaveTextContent("detection 0.74");
    const row = (await screen.findByRole("link", { name: "#1530" })).closest("tr")!;
    // the human label first, then the explanation, then its scores
    const cells = within(row).getAllByRole("cell").map((c) => c.textContent);
    expect(cells.slice(-4)).toEqual(["Python imports", "import statements", "0.91", "0.78"]);
    expect(screen.getByRole("columnheader", { name: "Explanation" })).toBeInTheDocument();
  });

  test("sorting by a score and filtering by one go to the URL and the server's query", async () => {
    const { calls } = stubServer([
      { path: /^\/api\/dictionaries\/gpt2-res6$/, body: explainedDetail },
      { path: /\/features\?/, body: explainedPage },
    ]);
    const view = renderAt("/dictionaries/gpt2-res6");
    await screen.findByRole("link", { name: "#1530" });
    fireEvent.click(screen.getByRole("button", { name: /Detection/ }));
    await waitFor(() => expect(calls.at(-1)!.url).toContain("sort=detection&order=desc"));
    expect(view.location()).toContain("sort=detection");
    await userEvent.type(screen.getByLabelText("min fuzzing"), "0.8");
    fireEvent.click(screen.getByRole("button", { name: "Filter" }));
    await waitFor(() => expect(calls.at(-1)!.url).toContain("min_fuzzing=0.8"));
    await userEvent.type(screen.getByLabelText("min detection"), "2");
    fireEvent.click(screen.getByRole("button", { name: "Filter" }));
    expect(await screen.findByText("min detection is a balanced accuracy from 0 to 1, got 2.")).toBeInTheDocument();
  });

  test("search by explanation: matched words marked, results link to the feature", async () => {
    const { calls } = stubServer([
      { path: /^\/api\/dictionaries\/gpt2-res6$/, body: explainedDetail },
      { path: /\/features\?/, body: explainedPage },
      {
        path: /\/search\/explanations\?/,
        body: {
          set_id: 2,
          matches: [{ index: 1530, explanation: "import statements", highlighted: "[import] statements", rank: -1.2, max_act: 24.7, density: 1e-5, label: "Python imports", detection: 0.91, fuzzing: 0.78 }],
        },
      },
    ]);
    const view = renderAt("/dictionaries/gpt2-res6");
    const panel = await screen.findByTestId("search-panel");
    fireEvent.click(within(panel).getByRole("tab", { name: "Explanation" }));
    await userEvent.type(within(panel).getByLabelText("Explanation words"), "import");
    fireEvent.click(within(panel).getByRole("button", { name: "Search" }));
    const results = await within(panel).findByTestId("explanation-results");
    expect(view.location()).toContain("search=explanation");
    expect(calls.at(-1)!.url).toContain("/search/explanations?q=import");
    expect(within(results).getByText("import").tagName).toBe("MARK");
    expect(within(results).getByRole("link", { name: "#1530" })).toHaveAttribute("href", "/dictionaries/gpt2-res6/analyses/default/features/1530");
  });

  test("a feature's page: the label first, then the explanation with its scores and the other sets'", async () => {
    stubServer(featureRoutes(featureExplanations));
    renderAt("/dictionaries/gpt2-res6/analyses/default/features/42");
    const panel = await screen.findByTestId("explanation");
    expect(await screen.findByTestId("feature-label")).toHaveTextContent("brackets");
    const headings = screen.getAllByRole("heading", { level: 2 }).map((h) => h.textContent);
    expect(headings.indexOf("Label and notes")).toBeLessThan(headings.indexOf("Explanation"));
    expect(within(panel).getAllByTestId("explanation-text")[0]).toHaveTextContent("Closing brackets of function calls");
    const scores = within(panel).getByTestId("explanation-scores");
    expect(within(scores).getByText("detection").closest("tr")).toHaveTextContent("0.830.830.830.9112");
    expect(within(scores).getByText("fuzzing").closest("tr")).toHaveTextContent("(1 unread)");
    expect(within(panel).getByText("1 other explanation (other explainers or settings)")).toBeInTheDocument();
    // the server's explainer (SmolLM2) wrote one of them already: nothing to explain
    expect(within(panel).queryByRole("button", { name: /Explain/ })).toBeNull();
  });

  test("explained by another model only: it can be explained with the server's", async () => {
    stubServer(featureRoutes({ ...featureExplanations, explanations: featureExplanations.explanations.slice(0, 1) }));
    renderAt("/dictionaries/gpt2-res6/analyses/default/features/42");
    const panel = await screen.findByTestId("explanation");
    expect(await within(panel).findByRole("button", { name: "Explain with SmolLM2-135M-Instruct" })).toBeInTheDocument();
  });

  test("explain this feature: a job whose progress shows until the new explanation appears", async () => {
    const running: Job = { id: "j1", kind: "explain", dictionary: "gpt2-res6", analysis: "default", feature: 42, status: "running", stage: "explaining with SmolLM2-135M-Instruct", step: 1, steps: 4, error: null, result: {}, seconds: 2 };
    const routes = featureRoutes(noExplanations);
    const server = stubServer([
      { method: "POST", path: /\/features\/42\/explain$/, body: { ...running, status: "queued", step: 0 } },
      { path: /^\/api\/jobs\/j1$/, body: running },
      ...routes,
    ]);
    renderAt("/dictionaries/gpt2-res6/analyses/default/features/42");
    const panel = await screen.findByTestId("explanation");
    expect(within(panel).getByText("No explanation yet.")).toBeInTheDocument();
    fireEvent.click(within(panel).getByRole("button", { name: "Explain this feature" }));
    const progress = await within(panel).findByTestId("job-progress");
    await waitFor(() => expect(progress).toHaveTextContent("explaining with SmolLM2-135M-Instruct"));
    expect(within(panel).getByRole("button", { name: "Explaining…" })).toBeDisabled();
    // the job ends: the panel reloads the feature's explanations
    const done = { ...running, status: "done", step: 4, stage: "done", result: { explained: true }, seconds: 9 };
    server.fetchMock.mockClear();
    stubServer([{ path: /^\/api\/jobs\/j1$/, body: done }, ...featureRoutes(featureExplanations)]);
    expect(await within(panel).findByText("Explained in 9 s.", {}, { timeout: 3000 })).toBeInTheDocument();
    expect(await within(panel).findByText("Closing brackets of function calls")).toBeInTheDocument();
    expect(server.calls.some((c) => c.method === "POST" && c.url.endsWith(`${base}/analyses/default/features/42/explain`))).toBe(true);
  });

  test("a refused job says why", async () => {
    stubServer([
      { method: "POST", path: /\/explain$/, status: 503, body: { detail: "All 1 inference slots are busy (GPT2DICT_INFERENCE_CONCURRENCY); try again in a few seconds." } },
      ...featureRoutes(noExplanations),
    ]);
    renderAt("/dictionaries/gpt2-res6/analyses/default/features/42");
    const panel = await screen.findByTestId("explanation");
    fireEvent.click(within(panel).getByRole("button", { name: "Explain this feature" }));
    expect(await within(panel).findByRole("alert")).toHaveTextContent("inference slots are busy");
  });
});
