import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, test } from "vitest";
import { annotation, deadFeature, dictionaryDetail, featureDetail, noExplanations, similar, steerResult } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

const base = "/api/dictionaries/gpt2-res6/analyses/default/features";
const routes = () => [
  { path: /^\/api\/dictionaries\/gpt2-res6$/, body: dictionaryDetail },
  { path: /^\/api\/dictionaries\/gpt2-res6\/features\/\d+\/annotation$/, body: annotation() },
  { path: /^\/api\/dictionaries\/gpt2-res6\/features\/\d+\/similar/, body: similar },
  { path: new RegExp(`^${base}/42$`), body: featureDetail },
  { path: new RegExp(`^${base}/43$`), body: { ...featureDetail, index: 43 } },
  { path: new RegExp(`^${base}/7$`), body: { ...featureDetail, index: 7 } },
  { path: new RegExp(`^${base}/random$`), body: { ...featureDetail, index: 4000 } },
  { path: new RegExp(`^${base}/99999$`), status: 404, body: { detail: "Feature 99999 does not exist: gpt2-res6 has 4608 features (0..4607)." } },
  {
    method: "POST",
    path: /activations$/,
    body: { token_ids: [1, 2, 3], tokens: ["Hi", " the", "\n"], feature: { index: 42, acts: [0, 4, 0] }, top_features: [[], [], []] },
  },
  { path: /\/features\/\d+\/explanations$/, body: noExplanations },
];
const url = (i: number | string) => `/dictionaries/gpt2-res6/analyses/default/features/${i}`;

describe("FeaturePage", () => {
  test("loading, then stats, histogram, logit lens, top contexts and interval samples", async () => {
    stubServer(routes());
    renderAt(url(42));
    expect(screen.getByRole("status")).toHaveTextContent("Loading feature 42");
    const body = await screen.findByTestId("feature-body");
    expect(within(body).getByTestId("max-act")).toHaveTextContent("8");
    expect(within(body).getByTestId("feature-stats")).toHaveTextContent("0.168%");
    expect(within(body).getByRole("figure", { name: "Activation histogram" })).toHaveTextContent("3,365 in 4 bins");

    const positive = within(body).getByTestId("logit-positive");
    expect(positive).toHaveTextContent("the");
    expect(positive).toHaveTextContent("↵");
    expect(within(body).getByTestId("logit-negative")).toHaveTextContent("-1.7");

    const top = within(body).getByTestId("top-contexts");
    const samples = within(top).getAllByTestId("sample");
    expect(samples).toHaveLength(2);
    const max = samples[0].querySelector<HTMLElement>(".tok-max")!;
    expect(max.textContent).toBe(" sat");
    expect(max.dataset.intensity).toBe("1.000");
    expect(max.getAttribute("title")).toMatch(/activation: 8 \(100% of max 8\)\nposition: 2$/);
    const on = samples[0].querySelector<HTMLElement>('[data-pos="4"]')!;
    expect(on.dataset.intensity).toBe("0.500"); // 4 / feature max 8
    expect(samples[1].textContent).toContain("→");

    const groups = within(body).getAllByTestId("interval-group");
    expect(groups[0]).toHaveTextContent("interval 1 [4, 8] 1 sample");
    expect(groups[1]).toHaveTextContent("No samples in this interval.");
  });

  test("prev / next / typed index / random change the URL and the feature", async () => {
    const { calls } = stubServer(routes());
    const view = renderAt(url(42));
    await screen.findByTestId("feature-body");
    fireEvent.click(screen.getByRole("button", { name: "Next feature" }));
    await waitFor(() => expect(view.location()).toBe(url(43)));
    await waitFor(() => expect(screen.getByTestId("feature-body")).toHaveAttribute("data-feature", "43"));

    const input = screen.getByLabelText("Feature index");
    await userEvent.clear(input);
    await userEvent.type(input, "7{Enter}");
    await waitFor(() => expect(view.location()).toBe(url(7)));
    await waitFor(() => expect(screen.getByTestId("feature-body")).toHaveAttribute("data-feature", "7"));

    await userEvent.clear(input);
    await userEvent.type(input, "5000{Enter}");
    expect(screen.getByRole("alert")).toHaveTextContent("Feature indices run from 0 to 4607.");

    fireEvent.click(screen.getByRole("button", { name: "Random" }));
    await waitFor(() => expect(view.location()).toBe(url(4000)));
    await waitFor(() => expect(screen.getByTestId("feature-body")).toHaveAttribute("data-feature", "4000"));
    expect(calls.filter((c) => c.url.endsWith("/features/4000"))).toHaveLength(0); // reused the random answer
  });

  test("the custom input shows this feature's activation per token", async () => {
    const { calls } = stubServer(routes());
    renderAt(url(42));
    const box = await screen.findByTestId("feature-input");
    await userEvent.type(within(box).getByRole("textbox"), "Hi the");
    fireEvent.click(within(box).getByRole("button", { name: "Run" }));
    expect(await within(box).findByTestId("feature-input-summary")).toHaveTextContent('Max activation 4 on " the" (position 1)');
    expect(calls.at(-1)).toMatchObject({ method: "POST", body: { text: "Hi the", feature: 42 } });
    const toks = box.querySelectorAll<HTMLElement>(".context .tok");
    expect(Array.from(toks).map((t) => t.dataset.intensity)).toEqual(["0.000", "0.500", "0.000"]);

    // the text is kept and rerun when moving to the next feature
    fireEvent.click(screen.getByRole("button", { name: "Next feature" }));
    await waitFor(() => expect(calls.at(-1)).toMatchObject({ method: "POST", body: { text: "Hi the", feature: 43 } }));
    expect(within(await screen.findByTestId("feature-input")).getByRole("textbox")).toHaveValue("Hi the");
  });

  test("an unknown index shows the server's 404 detail", async () => {
    stubServer(routes());
    renderAt(url(99999));
    expect(await screen.findByRole("alert")).toHaveTextContent("Not found: Feature 99999 does not exist");
  });

  test("a non-numeric index is rejected before asking the server", async () => {
    const { calls } = stubServer(routes());
    renderAt(url("abc"));
    expect(await screen.findByRole("alert")).toHaveTextContent('"abc" is not a feature index');
    expect(calls.some((c) => c.url.includes("/features/"))).toBe(false);
  });

  test("a dead feature says so, and the logit-lens note replaces empty tables", async () => {
    stubServer([...routes().slice(0, 3), ...routes().slice(-1), { path: new RegExp(`^${base}/3$`), body: deadFeature }]);
    renderAt(url(3));
    expect(await screen.findByTestId("dead-notice")).toHaveTextContent("Dead feature");
    expect(screen.getByTestId("logit-lens")).toHaveTextContent("Logit lens is only computed for residual-stream hooks.");
    expect(screen.getByRole("figure", { name: "Activation histogram" })).toHaveTextContent("Nothing to plot.");
    expect(screen.getByText("No activating contexts recorded.")).toBeInTheDocument();
  });

  test("server down on the feature page", async () => {
    stubServer([{ path: /.*/, networkError: true }]);
    renderAt(url(42));
    expect(await screen.findByRole("alert")).toHaveTextContent("Cannot reach the server at");
  });
});

describe("FeaturePage research tools", () => {
  test("a label is saved with the version it was based on, and shown in the header", async () => {
    const saved = annotation({ label: "Python imports", notes: "import / from", bookmarked: true, version: 1, updated_at: "2025-01-01T00:00:00Z" });
    const { calls } = stubServer([{ method: "PUT", path: /\/features\/42\/annotation$/, body: saved }, ...routes()]);
    renderAt(url(42));
    const editor = await screen.findByTestId("annotation");
    await userEvent.type(within(editor).getByLabelText("Label"), "Python imports");
    await userEvent.type(within(editor).getByLabelText("Notes"), "import / from");
    fireEvent.click(within(editor).getByRole("checkbox", { name: /bookmark/ }));
    expect(within(editor).getByTestId("annotation-status")).toHaveTextContent("unsaved changes");
    fireEvent.click(within(editor).getByRole("button", { name: "Save" }));
    await waitFor(() => expect(within(editor).getByTestId("annotation-status")).toHaveTextContent("saved (version 1)"));
    expect(calls.find((c) => c.method === "PUT")).toMatchObject({ body: { label: "Python imports", notes: "import / from", bookmarked: true, version: 0 } });
    expect(await screen.findByTestId("feature-label")).toHaveTextContent("Python imports");
  });

  test("a conflicting save from another tab is shown, not lost, and can be saved over on purpose", async () => {
    const theirs = annotation({ label: "theirs", notes: "their notes", version: 3, updated_at: "2025-01-01T00:00:00Z" });
    const mine = annotation({ label: "mine", version: 4 });
    let puts = 0;
    const { calls } = stubServer([
      {
        method: "PUT",
        path: /\/features\/42\/annotation$/,
        get status() {
          return puts++ === 0 ? 409 : 200;
        },
        get body() {
          return puts === 1 ? { detail: "Feature 42's annotation was changed elsewhere (your edit was based on version 0, the saved one is version 3).", current: theirs } : mine;
        },
      },
      ...routes(),
    ]);
    renderAt(url(42));
    const editor = await screen.findByTestId("annotation");
    await userEvent.type(within(editor).getByLabelText("Label"), "mine");
    fireEvent.click(within(editor).getByRole("button", { name: "Save" }));
    const conflict = await within(editor).findByTestId("annotation-conflict");
    expect(conflict).toHaveTextContent("Someone else saved this feature's label meanwhile (version 3");
    expect(within(conflict).getByTestId("conflict-label")).toHaveTextContent("theirs");
    expect(conflict).toHaveTextContent("their notes");
    expect(within(editor).getByLabelText("Label")).toHaveValue("mine"); // my text is still there
    fireEvent.click(within(conflict).getByRole("button", { name: "Save mine over theirs" }));
    await waitFor(() => expect(within(editor).queryByTestId("annotation-conflict")).toBeNull());
    const saves = calls.filter((c) => c.method === "PUT").map((c) => c.body);
    expect(saves).toEqual([
      { label: "mine", notes: "", bookmarked: false, version: 0 },
      { label: "mine", notes: "", bookmarked: false, version: 3 },
    ]);
  });

  test("similar features link to their pages, here and in a comparable dictionary", async () => {
    const { calls } = stubServer([
      { path: /\/features\/42\/similar\?dictionary=gpt2-res6-k64/, body: { ...similar, dictionary: "gpt2-res6-k64", analyses: ["wide"], comparable: ["gpt2-res6-k64"] } },
      ...routes(),
    ]);
    renderAt(url(42));
    const box = await screen.findByTestId("similar");
    expect(await within(box).findByRole("link", { name: "#77" })).toHaveAttribute("href", "/dictionaries/gpt2-res6/analyses/default/features/77");
    within(box).getByText("closing brackets");
    within(box).getByText("0.830");
    await userEvent.selectOptions(within(box).getByLabelText("Dictionary to search"), "gpt2-res6-k64");
    await waitFor(() =>
      expect(within(box).getByRole("link", { name: "#77" })).toHaveAttribute("href", "/dictionaries/gpt2-res6-k64/analyses/wide/features/77"),
    );
    expect(calls.some((c) => c.url.includes("similar?dictionary=gpt2-res6-k64"))).toBe(true);
  });

  test("steering shows the steered and the unsteered continuation side by side", async () => {
    const { calls } = stubServer([{ method: "POST", path: /\/features\/42\/steer$/, body: steerResult }, ...routes()]);
    renderAt(url(42));
    const box = await screen.findByTestId("steering");
    await userEvent.type(within(box).getByLabelText("Prompt to continue"), "The weather");
    fireEvent.click(within(box).getByRole("button", { name: "5× max" }));
    expect(within(box).getByLabelText("strength")).toHaveValue(40); // 5 × max act 8
    fireEvent.click(within(box).getByRole("button", { name: "Steer" }));
    const steered = await within(box).findByTestId("steered");
    expect(steered).toHaveTextContent("The weather import numpy");
    expect(within(box).getByTestId("unsteered")).toHaveTextContent("The weather is sunny.");
    expect(calls.find((c) => c.method === "POST")).toMatchObject({ body: { prompt: "The weather", strength: 40, max_new_tokens: 32, temperature: 0 } });
  });

  test("a steering error shows the server's sentence", async () => {
    stubServer([
      { method: "POST", path: /\/steer$/, status: 503, body: { detail: "All 1 inference slots are busy (GPT2DICT_INFERENCE_CONCURRENCY); retry in a moment." } },
      ...routes(),
    ]);
    renderAt(url(42));
    const box = await screen.findByTestId("steering");
    await userEvent.type(within(box).getByLabelText("Prompt to continue"), "Hi");
    fireEvent.click(within(box).getByRole("button", { name: "Steer" }));
    expect(await within(box).findByRole("alert")).toHaveTextContent("inference slots are busy");
  });
});
