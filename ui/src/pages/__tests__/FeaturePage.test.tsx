import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, test } from "vitest";
import { deadFeature, dictionaryDetail, featureDetail } from "../../test/fixtures";
import { stubServer } from "../../test/http";
import { renderAt } from "../../test/render";

const base = "/api/dictionaries/gpt2-res6/analyses/default/features";
const routes = () => [
  { path: /^\/api\/dictionaries\/gpt2-res6$/, body: dictionaryDetail },
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
    stubServer([
      { path: /^\/api\/dictionaries\/gpt2-res6$/, body: dictionaryDetail },
      { path: new RegExp(`^${base}/3$`), body: deadFeature },
    ]);
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
