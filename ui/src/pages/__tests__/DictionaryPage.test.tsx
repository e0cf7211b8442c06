import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, test } from "vitest";
import { activations, annotation, bareDictionary, dictionaryDetail, featurePage, importedDictionary, tokenSearch } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

const routes = () => [
  { path: /^\/api\/dictionaries\/gpt2-res6$/, body: dictionaryDetail },
  { path: /^\/api\/dictionaries\/gpt2-res6\/analyses\/default\/features\?/, body: featurePage },
  { method: "POST", path: /^\/api\/dictionaries\/gpt2-res6\/activations$/, body: activations },
];

describe("DictionaryPage", () => {
  test("loading, then metrics, dead/alive counts, density histogram and feature table", async () => {
    stubServer(routes());
    renderAt("/dictionaries/gpt2-res6?analysis=default");
    expect(screen.getByRole("status")).toHaveTextContent("Loading dictionary");
    await screen.findByRole("heading", { name: "gpt2-res6", level: 1 });
    const metrics = screen.getByTestId("metrics");
    within(metrics).getByText("87.3%");
    within(metrics).getByText("L0");
    expect(screen.getByTestId("n-alive")).toHaveTextContent("3,950");
    expect(screen.getByTestId("n-dead")).toHaveTextContent("658");
    expect(screen.getByRole("figure", { name: "Feature density histogram" })).toHaveTextContent("3,950 in 6 bins from -6 to 0");
    const link = await screen.findByRole("link", { name: "#1530" });
    expect(link).toHaveAttribute("href", "/dictionaries/gpt2-res6/analyses/default/features/1530");
    expect(screen.getByText("0 · dead")).toBeInTheDocument();
    expect(screen.getByTestId("page-info")).toHaveTextContent("1–50 of 4,608");
    // trained here: no provenance
    expect(screen.queryByTestId("provenance")).toBeNull();
    expect(screen.queryByTestId("source-tag")).toBeNull();
  });

  test("an imported dictionary says where it came from", async () => {
    stubServer([{ path: /^\/api\/dictionaries\/imported(:|%3A)gpt2-small-res-jb--blocks\.8\.hook_resid_pre$/, body: importedDictionary }]);
    renderAt("/dictionaries/imported:gpt2-small-res-jb--blocks.8.hook_resid_pre");
    const card = await screen.findByTestId("provenance");
    within(card).getByRole("heading", { name: "Imported from SAELens 6.54.12" });
    within(card).getByText("gpt2-small-res-jb");
    expect(within(card).getByRole("link", { name: "jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre" })).toHaveAttribute(
      "href",
      "https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted/tree/main/blocks.8.hook_resid_pre",
    );
    expect(within(card).getByRole("link", { name: "gpt2-small/8-res-jb" })).toHaveAttribute("href", "https://www.neuronpedia.org/gpt2-small/8-res-jb");
    within(card).getByText("gpt2-small");
    within(card).getByText("apply_b_dec_to_input=false: b_dec @ W_enc added to b_enc");
    within(card).getByText("5f1d2c3b4a596877…");
    expect(screen.getByTestId("source-tag")).toHaveTextContent("from SAELens");
    expect(screen.getByTestId("source-tag")).toHaveAttribute("title", "imported from SAELens 6.54.12: gpt2-small-res-jb / blocks.8.hook_resid_pre");
  });

  test("sorting and filtering go to the URL and to the server's query", async () => {
    const { calls } = stubServer(routes());
    const view = renderAt("/dictionaries/gpt2-res6?analysis=default");
    await screen.findByRole("link", { name: "#1530" });
    expect(calls.at(-1)!.url).toContain("sort=max_act&order=desc&offset=0&limit=50");

    fireEvent.click(screen.getByRole("button", { name: /Feature/ }));
    await waitFor(() => expect(calls.at(-1)!.url).toContain("sort=index&order=asc"));
    expect(view.location()).toContain("sort=index&order=asc");

    await userEvent.type(screen.getByPlaceholderText("e.g. 1e-5"), "1e-4");
    fireEvent.click(screen.getByRole("button", { name: "Filter" }));
    await waitFor(() => expect(calls.at(-1)!.url).toContain("min_density=0.0001"));
    expect(view.location()).toContain("min_density=0.0001");
  });

  test("text box: per-token top features that link to the feature page", async () => {
    const { calls } = stubServer(routes());
    renderAt("/dictionaries/gpt2-res6");
    const box = await screen.findByTestId("text-activations");
    await userEvent.type(within(box).getByRole("textbox"), "The cat sat");
    fireEvent.click(within(box).getByRole("button", { name: "Run" }));
    const table = await within(box).findByTestId("token-table");
    expect(calls.at(-1)).toMatchObject({ method: "POST", body: { text: "The cat sat", feature: null, top_k: 5 } });
    expect(within(table).getAllByRole("row")).toHaveLength(1 + 4);
    const chip = within(table).getAllByRole("link", { name: /#1530/ })[0];
    expect(chip).toHaveAttribute("href", "/dictionaries/gpt2-res6/analyses/default/features/1530");
    expect(within(table).getByText("no feature fires")).toBeInTheDocument();
    // the newline token is visible in the token row
    expect(box.querySelector(".context")!.textContent).toContain("↵");
    expect(within(box).queryByTestId("truncated")).toBeNull();
  });

  test("a text cut at the server's token limit says so", async () => {
    stubServer([...routes().slice(0, 2), { method: "POST", path: /activations$/, body: { ...activations, truncated: true } }]);
    renderAt("/dictionaries/gpt2-res6");
    const box = await screen.findByTestId("text-activations");
    await userEvent.type(within(box).getByRole("textbox"), "a very long text");
    fireEvent.click(within(box).getByRole("button", { name: "Run" }));
    expect(await within(box).findByTestId("truncated")).toHaveTextContent("Only the first 4 tokens were run");
  });

  test("413 from the text box shows the server's limit message", async () => {
    stubServer([
      ...routes().slice(0, 2),
      { method: "POST", path: /activations$/, status: 413, body: { detail: "Text is 5000 characters long; the limit is 2000." } },
    ]);
    renderAt("/dictionaries/gpt2-res6");
    const box = await screen.findByTestId("text-activations");
    await userEvent.type(within(box).getByRole("textbox"), "long text");
    fireEvent.click(within(box).getByRole("button", { name: "Run" }));
    expect(await within(box).findByRole("alert")).toHaveTextContent("Text too long: Text is 5000 characters long; the limit is 2000.");
  });

  test("an unknown dictionary shows the server's 404 detail", async () => {
    stubServer([{ path: /^\/api\/dictionaries\/nope$/, status: 404, body: { detail: "No dictionary named 'nope' in results/." } }]);
    renderAt("/dictionaries/nope");
    expect(await screen.findByRole("alert")).toHaveTextContent("Not found: No dictionary named 'nope' in results/.");
  });

  test("a dictionary without evaluation or analyses says so", async () => {
    stubServer([{ path: /^\/api\/dictionaries\/smollm-mlp3$/, body: { ...bareDictionary, config: {}, analysis_summaries: [] } }]);
    renderAt("/dictionaries/smollm-mlp3");
    expect(await screen.findByText(/saved without evaluation/)).toBeInTheDocument();
    expect(screen.getByText(/No analysis yet/)).toBeInTheDocument();
  });

  test("an analysis that does not exist is named in the error", async () => {
    stubServer(routes());
    renderAt("/dictionaries/gpt2-res6?analysis=missing");
    expect(await screen.findByRole("alert")).toHaveTextContent('no analysis named "missing"; available: default');
  });
});

describe("DictionaryPage search and labels", () => {
  test("the feature table shows labels and bookmarks, and can list only the bookmarked features", async () => {
    const { calls } = stubServer(routes());
    const view = renderAt("/dictionaries/gpt2-res6?analysis=default");
    const row = (await screen.findByRole("link", { name: "#1530" })).closest("tr")!;
    within(row).getByText("Python imports");
    within(row).getByLabelText("bookmarked");
    fireEvent.click(screen.getByRole("checkbox", { name: /bookmarked only/ }));
    await waitFor(() => expect(calls.at(-1)!.url).toContain("bookmarked=true"));
    expect(view.location()).toContain("bookmarked=1");
    expect(screen.getByRole("link", { name: "Export labels (JSON)" })).toHaveAttribute("href", "/api/dictionaries/gpt2-res6/annotations/export");
  });

  test("token search: results link to the right feature pages, and a token never seen is said so", async () => {
    const { calls } = stubServer([{ path: /\/analyses\/default\/search\/tokens\?/, body: tokenSearch }, ...routes()]);
    const view = renderAt("/dictionaries/gpt2-res6?analysis=default");
    const panel = await screen.findByTestId("search-panel");
    await userEvent.type(within(panel).getByLabelText("Token or phrase"), " import numpy");
    fireEvent.click(within(panel).getByRole("button", { name: "Search" }));
    const results = await within(panel).findByTestId("token-results");
    expect(within(results).getByRole("link", { name: "#1530" })).toHaveAttribute("href", "/dictionaries/gpt2-res6/analyses/default/features/1530");
    expect(within(results).getByRole("link", { name: "#12" })).toHaveAttribute("href", "/dictionaries/gpt2-res6/analyses/default/features/12");
    within(results).getByText("22.5");
    expect(within(results).getByText(/never occurred in the analysed text/)).toHaveTextContent('" numpy"');
    expect(calls.find((c) => c.url.includes("/search/tokens"))!.url).toContain("q=+import+numpy");
    expect(view.location()).toContain("q=+import+numpy");
  });

  test("label search lists annotated features with links", async () => {
    const labelled = [annotation({ index: 9, label: "brackets", bookmarked: true, version: 2 }), annotation({ index: 3, label: "", notes: "nested brackets", version: 1 })];
    stubServer([{ path: /\/annotations\?/, body: { annotations: labelled } }, ...routes()]);
    renderAt("/dictionaries/gpt2-res6?analysis=default&search=label&q=brackets");
    const results = await screen.findByTestId("label-results");
    expect(within(results).getByRole("link", { name: "#9" })).toHaveAttribute("href", "/dictionaries/gpt2-res6/analyses/default/features/9");
    within(results).getByText("nested brackets");
  });

  test("a token search in an older analysis shows the server's rerun message", async () => {
    stubServer([
      { path: /\/search\/tokens\?/, status: 404, body: { detail: "This analysis was written before token search existed (store schema version 1); rerun the analysis with overwrite=True to get it." } },
      ...routes(),
    ]);
    renderAt("/dictionaries/gpt2-res6?analysis=default&q=%20the");
    expect(await within(await screen.findByTestId("search-panel")).findByRole("alert")).toHaveTextContent("rerun the analysis");
  });
});
