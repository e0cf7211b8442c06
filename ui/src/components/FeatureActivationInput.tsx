import { useMutation } from "@tanstack/react-query";
import { useEffect } from "react";
import { api } from "../api";
import { fmt } from "../format";
import { tokenRepr } from "../tokens";
import { ActivationContext } from "./ActivationContext";
import { ErrorMessage, Loading } from "./QueryState";
import { TextInputForm } from "./TextInputForm";
import { TruncatedNote } from "./TruncatedNote";

/**
 * This feature's activation on typed text. The text is kept when moving to another
 * feature and rerun for it, so one sentence can be checked against many features.
 */
export interface FeatureActivationInputProps {
  dictionary: string;
  feature: number;
  maxAct: number;
  /** the text last run (kept by the page across features), or null */
  text: string | null;
  onRun: (text: string) => void;
}

export function FeatureActivationInput({ dictionary, feature, maxAct, text, onRun }: FeatureActivationInputProps) {
  const run = useMutation({
    mutationFn: ({ text, index }: { text: string; index: number }) => api.activations(dictionary, { text, feature: index, top_k: 1 }),
  });
  const { mutate } = run;
  useEffect(() => {
    if (text) mutate({ text, index: feature });
  }, [text, feature, mutate]);

  const result = run.data?.feature && run.data.feature.index === feature ? run.data : null;
  const acts = result?.feature?.acts ?? [];
  let argmax = -1;
  acts.forEach((a, i) => {
    if (argmax < 0 || a > acts[argmax]) argmax = i;
  });
  const textMax = argmax >= 0 ? acts[argmax] : 0;
  const scale = maxAct > 0 ? maxAct : textMax;
  const nActive = acts.filter((a) => a > 0).length;

  return (
    <div className="feature-input" data-testid="feature-input">
      <TextInputForm
        label="Text to test this feature on"
        placeholder="Type text to see this feature's activation on each token"
        pending={run.isPending}
        initialText={text ?? ""}
        onRun={(t) => (t === text ? mutate({ text: t, index: feature }) : onRun(t))}
      />
      {run.isPending && <Loading label="Running the model…" />}
      {run.isError && <ErrorMessage error={run.error} />}
      {run.isSuccess && !run.data.feature && <ErrorMessage error={new Error("The server returned no activations for this feature.")} />}
      {result && !run.isPending && (
        <div className="feature-input-result">
          <p className="small muted" data-testid="feature-input-summary">
            {nActive > 0 ? (
              <>
                Max activation <strong>{fmt(textMax)}</strong> on {tokenRepr(result.tokens[argmax])} (position {argmax}); fires on {nActive} of {acts.length} tokens
                {maxAct > 0 && textMax > maxAct ? " — above the largest activation in the analysis" : ""}.
              </>
            ) : (
              <>The feature does not fire on any of these {acts.length} tokens.</>
            )}
          </p>
          {result.truncated && <TruncatedNote n={result.tokens.length} />}
          <ActivationContext tokens={result.tokens} acts={acts} scale={scale} maxPos={nActive > 0 ? argmax : undefined} />
        </div>
      )}
    </div>
  );
}
