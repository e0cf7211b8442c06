import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, test } from "vitest";
import { featureDetail } from "../../test/fixtures";
import { graphFile, replacementDetail } from "../../test/graphFixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

const routes = () => [
  { path: /^\/api\/dictionaries\/clt-run(:|%3A)clt$/, body: replacementDetail },
  { path: /^\/api\/dictionaries\/clt-run(:|%3A)clt\/graphs\/cat$/, body: graphFile },
  { path: /^\/api\/dictionaries\/clt-run(:|%3A)clt\/analyses\/default\/features\/7$/, body: { ...featureDetail, index: 7 } },
  { method: "PUT", path: /\/graphs\/cat\/subgraph$/, body: { pinnedIds: ["0_7_2"], supernodes: [["cat", "0_7_2"]], linkType: "both", clickedId: "0_7_2", sg_pos: "" } },
  { method: "POST", path: /\/graphs\/cat\/intervene$/, body: {
    original: [{ token_id: 319, token: " sat", probability: 0.41, logit: 3 }],
    intervened: [{ token_id: 11, token: ",", probability: 0.2, logit: 2 }],
    applied: [{ layer: 0, position: 2, feature: 7, activation: 1.5, new_activation: 0 }],
  } },
];

describe("GraphPage", () => {
  test("nodes, edges, tokens and logits render; hover shows a node's label, activation and influence", async () => {
    stubServer(routes());
    renderAt("/dictionaries/clt-run:clt/graphs/cat");
    await screen.findByTestId("graph-canvas");
    expect(screen.getByTestId("graph-prompt")).toHaveTextContent("The cat");
    expect(screen.getAllByTestId("graph-node")).toHaveLength(7);
    expect(screen.getAllByTestId("graph-edge")).toHaveLength(4);
    expect(screen.getAllByTestId("graph-token").map((t) => t.textContent)).toEqual(["<|endoftext|>", "The", " cat"]);
    expect(screen.getByTestId("graph-scores")).toHaveTextContent("replacement 0.71");
    const feature = document.querySelector('[data-node-id="0_7_2"]')!;
    fireEvent.mouseEnter(feature);
    const tip = screen.getByTestId("graph-tooltip");
    expect(tip).toHaveTextContent("cats — feature 7 of layer 0");
    expect(tip).toHaveTextContent("activation 1.5");
    expect(tip).toHaveTextContent("influence (cumulative) 0.25");
  });

  test("the threshold slider hides the less influential nodes", async () => {
    stubServer(routes());
    renderAt("/dictionaries/clt-run:clt/graphs/cat");
    await screen.findByTestId("graph-canvas");
    fireEvent.change(screen.getByLabelText("Node threshold"), { target: { value: "0.5" } });
    expect(screen.getAllByTestId("graph-node")).toHaveLength(5);
    expect(screen.getByTestId("shown-count")).toHaveTextContent("5 nodes, 1 edges shown");
  });

  test("a click opens the feature card; pin, group and save the subgraph; intervene", async () => {
    const { calls } = stubServer(routes());
    renderAt("/dictionaries/clt-run:clt/graphs/cat");
    await screen.findByTestId("graph-canvas");
    fireEvent.click(document.querySelector('[data-node-id="0_7_2"]')!);
    const card = await screen.findByTestId("feature-card");
    expect(within(card).getByTestId("feature-page-link")).toHaveAttribute("href", "/dictionaries/clt-run%3Aclt/analyses/default/features/7");
    await within(card).findAllByTestId("sample");
    fireEvent.click(within(screen.getByTestId("node-panel")).getByRole("button", { name: "Pin" }));
    const panel = screen.getByTestId("subgraph-panel");
    fireEvent.click(within(panel).getByRole("checkbox"));
    fireEvent.change(within(panel).getByLabelText("Supernode name"), { target: { value: "cat" } });
    fireEvent.click(within(panel).getByRole("button", { name: "Group checked" }));
    expect(within(panel).getByTestId("supernode")).toHaveTextContent("cat (1 nodes)");
    fireEvent.click(within(panel).getByRole("button", { name: "Save subgraph" }));
    await waitFor(() => expect(within(panel).getByRole("button", { name: "Saved" })).toBeDisabled());
    expect(calls.find((c) => c.method === "PUT")!.body).toEqual({ pinnedIds: ["0_7_2"], supernodes: [["cat", "0_7_2"]], clickedId: "0_7_2" });
    const intervention = screen.getByTestId("intervention-panel");
    fireEvent.click(within(intervention).getByRole("button", { name: "Run" }));
    const table = await screen.findByTestId("intervention-result");
    expect(table).toHaveTextContent("sat");
    expect(calls.find((c) => c.method === "POST")!.body).toEqual({ interventions: [{ node_id: "0_7_2", scale: 0 }], top_k: 8, propagate: true });
  });
});

describe("a replacement model's graphs on its dictionary page", () => {
  test("saved graphs are listed; a new one is computed as a job whose progress shows", async () => {
    let polls = 0;
    const job = (status: string, done: number) => ({ id: "j1", dictionary: "clt-run:clt", slug: "the-dog", prompt: "The dog",
                                                     status, done, total: 40, error: null, seconds: 1.5 });
    const { calls } = stubServer([
      ...routes(),
      { path: /^\/api\/dictionaries\/clt-run(:|%3A)clt\/graphs$/, body: { graphs: [
        { slug: "cat", prompt: "The cat", n_nodes: 7, n_links: 4, scores: { replacement: 0.71, completeness: 0.9 }, modified: 1, error: null },
      ] } },
      { method: "POST", path: /^\/api\/dictionaries\/clt-run(:|%3A)clt\/graphs$/, status: 202, body: job("loading", 0) },
      { path: /^\/api\/graph-jobs\/j1$/, get body() { polls += 1; return polls < 2 ? job("running", 20) : job("done", 40); } },
    ]);
    renderAt("/dictionaries/clt-run:clt");
    const list = await screen.findByTestId("graph-list");
    const row = await within(list).findByTestId("graph-row");
    expect(within(row).getByRole("link", { name: "cat" })).toHaveAttribute("href", "/dictionaries/clt-run%3Aclt/graphs/cat");
    expect(row).toHaveTextContent("0.71 / 0.9");
    fireEvent.change(within(list).getByLabelText("Prompt"), { target: { value: "The dog" } });
    fireEvent.click(within(list).getByRole("button", { name: "Compute graph" }));
    await waitFor(() => expect(screen.getByTestId("graph-job")).toHaveAttribute("data-status", "done"), { timeout: 5000 });
    expect(within(list).getByRole("link", { name: "open the-dog" })).toHaveAttribute("href", "/dictionaries/clt-run%3Aclt/graphs/the-dog");
    expect(calls.find((c) => c.method === "POST")!.body).toEqual({ prompt: "The dog" });
  });
});
