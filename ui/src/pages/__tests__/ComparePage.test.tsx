import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { comparison, dictionaryDetail, sweepRun } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

describe("ComparePage", () => {
  test("a run's dictionaries: every plot with its points, the Pareto frontier and the configs left out", async () => {
    const { calls } = stubServer([{ path: /^\/api\/compare\?/, body: comparison }]);
    renderAt("/compare?run=sweep");
    await screen.findByRole("heading", { name: "Compare: sweep", level: 1 });
    expect(calls[0].url).toMatch(/\/api\/compare\?run=sweep&space=0$/);
    const plot = (key: string) => document.querySelector(`[data-plot="${key}"]`) as HTMLElement;
    const ev = plot("explained_variance");
    const points = ev.querySelectorAll("[data-point]");
    expect(points).toHaveLength(3);
    expect([...points].map((p) => p.getAttribute("data-pareto"))).toEqual(["true", "false", "true"]);
    expect(within(ev).getByRole("link", { name: "sweep:res6-k32" })).toHaveAttribute("href", "/dictionaries/sweep%3Ares6-k32");
    expect(within(ev).getByTestId("pareto-line").getAttribute("points")!.split(" ")).toHaveLength(2);
    const probing = plot("sparse_probing");
    expect(probing.querySelectorAll("[data-point]")).toHaveLength(2);
    expect(within(probing).getByTestId("plot-excluded")).toHaveTextContent("Not plotted, computed with another config: k64.");
    expect(within(plot("interpretability")).getByText("No dictionary has scored explanations.")).toBeInTheDocument();
    expect(screen.getByTestId("config-notes")).toHaveTextContent("sparse_probing of k64: context_length 64 (the others: 128)");
    const row = screen.getByTestId("compare-metrics").querySelector('[data-metric="sparse_probing.sae.sae_top_1_test_accuracy"]')!;
    expect(row.querySelectorAll("td.excluded")).toHaveLength(1);
    expect(row).toHaveTextContent("0.9 †");
  });

  test("dictionaries can be added from the same model and hook, or left out", async () => {
    const { calls } = stubServer([{ path: /^\/api\/compare\?/, body: comparison }]);
    const view = renderAt("/compare?run=sweep");
    const add = await screen.findByRole("link", { name: "+ other / res6" });
    fireEvent.click(add);
    await waitFor(() => expect(view.location()).toBe("/compare?dictionary=sweep%3Ares6-k16&dictionary=sweep%3Ares6-k32&dictionary=sweep%3Ares6-k64&dictionary=other%3Ares6"));
    await waitFor(() => expect(calls.at(-1)!.url).toContain("dictionary=sweep%3Ares6-k16&dictionary=sweep%3Ares6-k32"));
    fireEvent.click(screen.getByRole("link", { name: "leave out sweep:res6-k32" }));
    await waitFor(() => expect(view.location()).not.toContain("res6-k32"));
  });

  test("the run page links to the comparison; a bad request shows the server's sentence", async () => {
    stubServer([
      { path: /^\/api\/runs\/sweep$/, body: sweepRun },
      { path: /^\/api\/compare\?/, status: 422, body: { detail: "Dictionaries 'x:y' are not of the model and hook of 'sweep:res3-k16'." } },
      { path: /^\/api\/dictionaries\//, body: dictionaryDetail },
    ]);
    const view = renderAt("/runs/sweep");
    fireEvent.click(await screen.findByTestId("compare-link"));
    await waitFor(() => expect(view.location()).toBe("/compare?run=sweep"));
    expect(await screen.findByRole("alert")).toHaveTextContent("are not of the model and hook");
  });
});
