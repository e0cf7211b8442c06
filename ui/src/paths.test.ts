import { describe, expect, test } from "vitest";
import { architectureLabel, comparePath, hookLabel, layerRanges } from "./paths";

describe("paths and labels", () => {
  test("layers as ranges", () => {
    expect(layerRanges([0, 1, 2, 3, 4, 5])).toBe("0–5");
    expect(layerRanges([0, 1, 2, 5, 7, 8])).toBe("0–2, 5, 7–8");
    expect(layerRanges([3])).toBe("3");
  });

  test("a dictionary's hooks and what it is", () => {
    expect(hookLabel({ hook_name: "blocks.6.hook_resid_post" })).toBe("blocks.6.hook_resid_post");
    expect(hookLabel({ hook_name: "blocks.3.ln2.hook_normalized", hook_out: "blocks.3.hook_mlp_out" })).toBe(
      "blocks.3.ln2.hook_normalized → blocks.3.hook_mlp_out",
    );
    expect(hookLabel({ hook_name: "blocks.0.ln2.hook_normalized", hook_out: "blocks.0.hook_mlp_out", layers: [0, 1, 2, 3] })).toBe(
      "layers 0–3: ln2.hook_normalized → hook_mlp_out",
    );
    expect(architectureLabel({ hook_name: "h", architecture: "topk" })).toBe("topk");
    expect(architectureLabel({ hook_name: "h", hook_out: "o", architecture: "topk" })).toBe("topk transcoder");
    expect(architectureLabel({ hook_name: "h", hook_out: "o", architecture: "jumprelu", kind: "transcoder_set" })).toBe("jumprelu transcoder set");
  });

  test("the compare page's URL", () => {
    expect(comparePath({ run: "my sweep" })).toBe("/compare?run=my+sweep");
    expect(comparePath({ run: "s", space: 1 })).toBe("/compare?run=s&space=1");
    expect(comparePath({ dictionaries: ["a:x", "b:y"] })).toBe("/compare?dictionary=a%3Ax&dictionary=b%3Ay");
  });
});
