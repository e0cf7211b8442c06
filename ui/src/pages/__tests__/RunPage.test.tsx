import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { dictionaryDetail, liveRun, sweepRun } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

describe("RunPage", () => {
  test("a sweep: one scatter point per dictionary in each plot, each linking to its dictionary page", async () => {
    stubServer([{ path: /^\/api\/runs\/sweep$/, body: sweepRun }]);
    renderAt("/runs/sweep");
    await screen.findByRole("heading", { name: "sweep", level: 1 });
    expect(screen.getByTestId("run-state")).toHaveTextContent("finished");
    const plots = screen.getAllByTestId("scatter");
    expect(plots).toHaveLength(2); // explained variance and CE loss recovered against L0
    for (const plot of plots) {
      const points = plot.querySelectorAll("[data-point]");
      expect(points).toHaveLength(3);
      for (const d of sweepRun.series) {
        const link = within(plot).getByRole("link", { name: d.name });
        expect(link).toHaveAttribute("href", `/dictionaries/${encodeURIComponent(d.id!)}`);
      }
    }
    const table = screen.getByTestId("run-dictionaries");
    within(table).getByText("80.0%"); // k32's explained variance
    expect(screen.getAllByTestId("line-chart")).toHaveLength(5);
    expect(screen.getByRole("figure", { name: "Loss" })).toHaveTextContent("3 series, 9 points");
  });

  test("a scatter point opens its dictionary", async () => {
    stubServer([
      { path: /^\/api\/runs\/sweep$/, body: sweepRun },
      { path: /^\/api\/dictionaries\/sweep%3Ares3-k32$/, body: { ...dictionaryDetail, name: "sweep:res3-k32", run: "sweep" } },
      { path: /\/features\?/, body: { total: 0, offset: 0, limit: 50, features: [] } },
    ]);
    const view = renderAt("/runs/sweep");
    const plot = (await screen.findAllByTestId("scatter"))[0];
    fireEvent.click(within(plot).getByRole("link", { name: "res3-k32" }));
    await waitFor(() => expect(view.location()).toBe("/dictionaries/sweep%3Ares3-k32"));
    expect(await screen.findByRole("heading", { name: "sweep / res3-k32", level: 1 })).toBeInTheDocument();
  });

  test("a run in progress says so, and a dictionary not saved yet has no link", async () => {
    stubServer([{ path: /^\/api\/runs\/live$/, body: liveRun }]);
    renderAt("/runs/live");
    expect(await screen.findByTestId("run-state")).toHaveTextContent("in progress");
    const table = screen.getByTestId("run-dictionaries");
    expect(within(table).queryByRole("link")).toBeNull();
    within(table).getByText("res3-k16");
    expect(screen.queryByTestId("scatter")).toBeNull(); // one dictionary: no trade-off to plot
  });

  test("an unknown run shows the server's 404 detail", async () => {
    stubServer([{ path: /^\/api\/runs\/nope$/, status: 404, body: { detail: "No run named 'nope' in the results folder." } }]);
    renderAt("/runs/nope");
    expect(await screen.findByRole("alert")).toHaveTextContent("Not found: No run named 'nope'");
  });

  test("the runs list links every run", async () => {
    stubServer([{ path: /^\/api\/runs$/, body: { runs: [{ name: "sweep", dictionaries: sweepRun.dictionaries, has_metrics: true }] } }]);
    renderAt("/runs");
    expect(await screen.findByRole("link", { name: "sweep" })).toHaveAttribute("href", "/runs/sweep");
    expect(screen.getByRole("link", { name: "res3-k64" })).toHaveAttribute("href", "/dictionaries/sweep%3Ares3-k64");
  });
});
