import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, test } from "vitest";
import type { ReplacementFeature } from "../../api";
import { annotation, cltDetail, dictionarySummary, featureDetail, featurePage, noExplanations } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

const dict = /^\/api\/dictionaries\/smollm2-clt(:|%3A)clt/;
const place: ReplacementFeature = { index: 142, layer: 1, layer_index: 42, target_layers: [1, 2], decoder_norms: [0.8, 0.2] };
const clt = (path: string) => new RegExp(`${dict.source}${path}`);

describe("a replacement model", () => {
  test("its page has the evaluation per layer, as a table and a bar per layer in each plot", async () => {
    stubServer([
      { path: clt("$"), body: cltDetail },
      { path: clt("/analyses/default/features\\?"), body: featurePage },
    ]);
    renderAt("/dictionaries/smollm2-clt:clt");
    await screen.findByRole("heading", { name: "smollm2-clt / clt", level: 1 });
    expect(screen.getByTestId("architecture")).toHaveTextContent("batchtopk cross-layer transcoder");
    expect(screen.getByTestId("hook")).toHaveTextContent("layers 0–2: ln2.hook_normalized → hook_mlp_out");
    const evaluation = screen.getByTestId("layer-evaluation");
    const rows = within(within(evaluation).getByTestId("layer-table")).getAllByRole("row");
    expect(rows).toHaveLength(1 + 3);
    expect(rows[2]).toHaveTextContent("58.0%"); // layer 1's explained variance
    const plots = within(evaluation).getAllByTestId("layer-plot");
    expect(plots.map((p) => p.getAttribute("aria-label"))).toEqual([
      "Explained variance per layer",
      "Normalized MSE per layer",
      "L0 (active features per token) per layer",
    ]);
    for (const plot of plots) expect(plot.querySelectorAll("g.layer-bar rect")).toHaveLength(3);
    expect(within(plots[0]).getByText("105.0%")).toBeInTheDocument(); // over 100%: a bar above the others, not clipped
  });

  test("the feature table can show one layer's features", async () => {
    const { calls } = stubServer([
      { path: clt("$"), body: cltDetail },
      { path: clt("/analyses/default/features\\?"), body: { ...featurePage, features: featurePage.features.map((f) => ({ ...f, layer: 1 })) } },
    ]);
    const view = renderAt("/dictionaries/smollm2-clt:clt");
    await screen.findByRole("link", { name: "#1530" });
    const table = document.querySelector(".feature-table") as HTMLElement;
    expect(within(table).getByRole("columnheader", { name: "Layer" })).toBeInTheDocument();
    expect(within(table).getAllByRole("row")[1]).toHaveTextContent(/#1530\s*1/);
    await userEvent.selectOptions(screen.getByRole("combobox", { name: "Layer" }), "2");
    expect(view.location()).toContain("layer=2");
    expect(calls.at(-1)!.url).toContain("layer=2");
  });

  test("a feature's page says its layer and where it writes, with no steering or nearest features", async () => {
    stubServer([
      { path: clt("$"), body: cltDetail },
      { path: clt("/analyses/default/features/142$"), body: { ...featureDetail, index: 142, d_sae: 300 } },
      { path: clt("/features/142/replacement$"), body: place },
      { path: clt("/features/142/annotation$"), body: annotation({ index: 142 }) },
      { path: clt("/analyses/default/features/142/explanations$"), body: { ...noExplanations, index: 142 } },
    ]);
    renderAt("/dictionaries/smollm2-clt:clt/analyses/default/features/142");
    expect(await screen.findByTestId("feature-layer")).toHaveTextContent("layer 1 · #42 of the layer");
    const norms = screen.getByTestId("decoder-norms");
    expect(norms).toHaveTextContent("writes to the MLP outputs of layers 1, 2");
    const rows = within(norms).getAllByRole("row").slice(1);
    expect(rows.map((r) => r.getAttribute("data-layer"))).toEqual(["1", "2"]);
    const fills = norms.querySelectorAll<HTMLElement>(".norm-bar-fill");
    expect([...fills].map((f) => f.style.width)).toEqual(["100%", "25%"]);
    expect(screen.getByTestId("logit-lens")).toHaveTextContent("Its decoder into layer 2, the last layer it writes to");
    expect(screen.queryByTestId("steering")).toBeNull();
    expect(screen.queryByRole("heading", { name: "Similar features" })).toBeNull();
  });

  test("the dictionaries list shows the kind and the layers", async () => {
    stubServer([{ path: /^\/api\/dictionaries$/, body: { dictionaries: [dictionarySummary, cltDetail] } }]);
    renderAt("/");
    const row = (await screen.findByTestId("dictionaries-table")).querySelector('[data-dictionary="smollm2-clt:clt"]') as HTMLElement;
    expect(row).toHaveTextContent("layers 0–2: ln2.hook_normalized → hook_mlp_out");
    expect(row).toHaveTextContent("batchtopk cross-layer transcoder");
    expect(row).toHaveTextContent("100 × 3");
  });
});
