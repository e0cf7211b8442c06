import { useMutation } from "@tanstack/react-query";
import { useId, useState } from "react";
import { api, type Continuation, type SteerResult } from "../api";
import { fmt } from "../format";
import { ErrorMessage, Loading } from "./QueryState";

const MULTIPLES = [-2, 1, 2, 5, 10];

export interface SteeringPanelProps {
  dictionary: string;
  feature: number;
  /** the feature's largest activation in the analysis: strengths are offered in multiples of it */
  maxAct: number;
}

/**
 * Steering: the model continues a prompt with this feature's decoder direction × strength added at
 * its hook on every position, shown beside the continuation without it.
 */
export function SteeringPanel({ dictionary, feature, maxAct }: SteeringPanelProps) {
  const unit = maxAct > 0 ? maxAct : 1;
  const [prompt, setPrompt] = useState("");
  const [strength, setStrength] = useState(() => Number((2 * unit).toPrecision(3)));
  const [tokens, setTokens] = useState(32);
  const [sample, setSample] = useState(false);
  const [temperature, setTemperature] = useState(0.8);
  const [seed, setSeed] = useState(0);
  const ids = { prompt: useId(), strength: useId() };
  const run = useMutation({
    mutationFn: () =>
      api.steer(dictionary, feature, {
        prompt,
        strength,
        max_new_tokens: tokens,
        temperature: sample ? temperature : 0,
        seed,
      }),
  });
  const result = run.data;
  return (
    <div data-testid="steering">
      <form
        className="steer-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (prompt && !run.isPending) run.mutate();
        }}
      >
        <label htmlFor={ids.prompt} className="sr-only">
          Prompt to continue
        </label>
        <textarea id={ids.prompt} rows={2} placeholder="A prompt for the model to continue, e.g. The weather today is" value={prompt} onChange={(e) => setPrompt(e.target.value)} />
        <div className="steer-controls">
          <label className="inline-field" htmlFor={ids.strength}>
            strength
            <input id={ids.strength} type="number" step="any" value={strength} onChange={(e) => setStrength(Number(e.target.value))} />
          </label>
          <span className="link-list" role="group" aria-label="presets: multiples of the max activation">
            {MULTIPLES.map((m) => (
              <button key={m} type="button" className="btn btn-small" title={`${m} × max activation (${fmt(unit)})`} onClick={() => setStrength(Number((m * unit).toPrecision(3)))}>
                {m}× max
              </button>
            ))}
          </span>
          <label className="inline-field">
            new tokens
            <input type="number" min={1} max={256} value={tokens} onChange={(e) => setTokens(Math.max(1, Math.round(Number(e.target.value)) || 1))} />
          </label>
          <label className="checkbox">
            <input type="checkbox" checked={sample} onChange={(e) => setSample(e.target.checked)} /> sample
          </label>
          {sample && (
            <>
              <label className="inline-field">
                temperature
                <input type="number" min={0.05} max={10} step={0.05} value={temperature} onChange={(e) => setTemperature(Number(e.target.value))} />
              </label>
              <label className="inline-field">
                seed
                <input type="number" min={0} step={1} value={seed} onChange={(e) => setSeed(Math.max(0, Math.round(Number(e.target.value)) || 0))} />
              </label>
            </>
          )}
          <button type="submit" className="btn btn-primary" disabled={!prompt || run.isPending}>
            {run.isPending ? "Generating…" : "Steer"}
          </button>
        </div>
        <span className="muted hint">
          Adds strength × the feature's decoder direction (in activation units: strength {fmt(unit)} is the feature at its max) to the model's activations at every
          position. {sample ? "Both continuations share the seed's random draws." : "Greedy decoding."} Every new token reruns the whole text, so this takes a few seconds.
        </span>
      </form>
      {run.isPending && <Loading label="Generating both continuations…" />}
      {run.isError && <ErrorMessage error={run.error} />}
      {result && !run.isPending && <SteeringResultView result={result} />}
    </div>
  );
}

function SteeringResultView({ result }: { result: SteerResult }) {
  const prompt = result.prompt_tokens.slice(1).join(""); // without the BOS the model reads first
  return (
    <div>
      {result.prompt_cut && <p className="notice small">The prompt was long: only its last {result.prompt_tokens.length - 1} tokens were used.</p>}
      <div className="continuations">
        <ContinuationView title="Steered" testId="steered" className="continuation steered" prompt={prompt} c={result.steered} />
        <ContinuationView title="Unsteered" testId="unsteered" className="continuation" prompt={prompt} c={result.unsteered} />
      </div>
      <p className="muted small">
        Added at <span className="mono">{result.hook_name}</span> (vector norm {fmt(result.direction_norm)}).
        {result.steered.text === result.unsteered.text ? " The two continuations are identical: this strength changes nothing the model writes." : ""}
      </p>
    </div>
  );
}

function ContinuationView({ title, testId, className, prompt, c }: { title: string; testId: string; className: string; prompt: string; c: Continuation }) {
  return (
    <section className={className} data-testid={testId}>
      <h4>
        {title} <span className="muted small">({c.token_ids.length} tokens{c.stopped ? ", ended" : ""})</span>
      </h4>
      <div className="generated" title={c.tokens.map((t) => JSON.stringify(t)).join(" ")}>
        <span className="prompt-part">{prompt}</span>
        <span className="generated-text">{c.text}</span>
      </div>
    </section>
  );
}
