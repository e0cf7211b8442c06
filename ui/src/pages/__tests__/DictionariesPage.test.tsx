import { screen, within } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { bareDictionary, dictionarySummary } from "../../test/fixtures";
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
    const row = (await screen.findByText("gpt2-res6")).closest("tr")!;
    const cells = within(row);
    cells.getByText("blocks.6.hook_resid_post");
    cells.getByText("4,608");
    cells.getByText("87.3%"); // explained variance
    cells.getByText("94.1%"); // CE loss recovered
    expect(cells.getByRole("link", { name: "default" })).toHaveAttribute("href", "/dictionaries/gpt2-res6?analysis=default");
    const bare = screen.getByText("smollm-mlp3").closest("tr")!;
    within(bare).getByText("none");
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
