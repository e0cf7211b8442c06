import { screen, within } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { bareDictionary, dictionarySummary, importedDictionary, transcoderSummary } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

describe("DictionariesPage", () => {
  test("shows a loading state while the list is on its way", async () => {
    stubServer([{ path: /^\/api\/dictionaries$/, pending: true }]);
    renderAt("/");
    expect(await screen.findByRole("status")).toHaveTextContent("Loading dictionaries");
  });

  test("lists every dictionary with model, hook, sizes, metrics and analysis links", async () => {
    stubServer([{ path: /^\/api\/dictionaries$/, body: { dictionaries: [dictionarySummary, bareDictionary] } }]);
    renderAt("/");
    const row = (await screen.findByRole("link", { name: "gpt2-res6", description: /id gpt2-res6/ })).closest("tr")!;
    const cells = within(row);
    cells.getByText("blocks.6.hook_resid_post");
    cells.getByText("4,608");
    cells.getByText("87.3%"); // explained variance
    cells.getByText("94.1%"); // CE loss recovered
    expect(cells.getByRole("link", { name: "default" })).toHaveAttribute("href", "/dictionaries/gpt2-res6?analysis=default");
    const bare = screen.getAllByText("smollm-mlp3")[0].closest("tr")!;
    within(bare).getByText("none");
  });

  test("shows a dictionary id as run / name, links its run, and a transcoder's hooks as in → out", async () => {
    stubServer([{ path: /^\/api\/dictionaries$/, body: { dictionaries: [dictionarySummary, transcoderSummary] } }]);
    renderAt("/");
    const name = await screen.findByRole("link", { name: "smollm-sweep / mlp3-tc" });
    expect(name).toHaveAttribute("href", "/dictionaries/smollm-sweep%3Amlp3-tc");
    const row = within(name.closest("tr")!);
    expect(row.getByRole("link", { name: "smollm-sweep" })).toHaveAttribute("href", "/runs/smollm-sweep");
    row.getByText("blocks.3.ln2.hook_normalized → blocks.3.hook_mlp_out");
    row.getByText("topk transcoder");
  });

  test("marks an imported dictionary with where it came from", async () => {
    const { config: _config, analysis_summaries: _summaries, ...imported } = importedDictionary;
    stubServer([{ path: /^\/api\/dictionaries$/, body: { dictionaries: [dictionarySummary, imported] } }]);
    renderAt("/");
    const name = await screen.findByRole("link", { name: "imported / gpt2-small-res-jb--blocks.8.hook_resid_pre" });
    const tag = within(name.closest("tr")!).getByTestId("source-tag");
    expect(tag).toHaveTextContent("from SAELens");
    expect(tag).toHaveAttribute("title", "imported from SAELens 6.54.12: gpt2-small-res-jb / blocks.8.hook_resid_pre");
    expect(screen.getAllByTestId("source-tag")).toHaveLength(1);
  });

  test("says clearly when the server cannot be reached", async () => {
    stubServer([{ path: /^\/api\/dictionaries$/, networkError: true }]);
    renderAt("/");
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent(/Cannot reach the server at http:\/\/localhost/);
    within(alert).getByRole("button", { name: "Retry" });
  });

  test("explains an empty results folder", async () => {
    stubServer([
      { path: /^\/api\/dictionaries$/, body: { dictionaries: [] } },
      { path: /^\/api\/health$/, body: { status: "ok", results_dir: "/data/results", n_dictionaries: 0 } },
    ]);
    renderAt("/");
    expect(await screen.findByTestId("no-dictionaries")).toHaveTextContent("No dictionaries found");
    expect(await screen.findByText(/in \/data\/results/)).toBeInTheDocument();
  });
});
