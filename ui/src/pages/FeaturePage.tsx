import { useQueryClient } from "@tanstack/react-query";
import { useCallback, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { api, type FeatureDetail, type ReplacementFeature } from "../api";
import { AnnotationEditor } from "../components/AnnotationEditor";
import { DecoderNorms } from "../components/DecoderNorms";
import { ExplanationPanel } from "../components/ExplanationPanel";
import { FeatureActivationInput } from "../components/FeatureActivationInput";
import { FeatureNav } from "../components/FeatureNav";
import { Histogram } from "../components/Histogram";
import { IntervalGroups } from "../components/IntervalGroups";
import { LogitLensTable } from "../components/LogitLensTable";
import { SourceTag } from "../components/Provenance";
import { ErrorMessage, Loading } from "../components/QueryState";
import { SampleList } from "../components/SampleList";
import { SimilarFeatures } from "../components/SimilarFeatures";
import { SteeringPanel } from "../components/SteeringPanel";
import { fmt, fmtDensity, fmtInt, log10Density } from "../format";
import { dictionaryLabel, dictionaryParts, dictionaryPath, featurePath, hookLabel, isReplacement, runPath } from "../paths";
import { keys, useAnnotation, useDictionary, useFeature, useReplacementFeature } from "../queries";
import { useTitle } from "../useTitle";

const CONTEXT_WINDOW = { before: 24, after: 8 };

/** `/dictionaries/:name/analyses/:analysis/features/:index`: everything recorded about one feature. */
export function FeaturePage() {
  const { name = "", analysis = "", index: indexParam = "" } = useParams();
  const index = /^\d+$/.test(indexParam) ? Number(indexParam) : null;
  useTitle(`${dictionaryLabel(name)} · feature ${indexParam}`);
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const feature = useFeature(name, analysis, index);
  const dict = useDictionary(name); // for d_sae and n_tokens; its errors show through the feature query
  const annotation = useAnnotation(name, index);
  const summary = dict.data?.analysis_summaries.find((s) => s.name === analysis);
  const dSae = feature.data?.d_sae ?? dict.data?.n_features;
  const replacement = isReplacement(dict.data);
  const place = useReplacementFeature(name, index ?? -1, replacement && index !== null && index < (dSae ?? 0));

  const [probeText, setProbeText] = useState<string | null>(null); // kept while moving between features
  const [randomError, setRandomError] = useState<unknown>(null);
  const [randomPending, setRandomPending] = useState(false);
  const go = useCallback((i: number) => navigate(featurePath(name, analysis, i)), [navigate, name, analysis]);
  const random = async () => {
    setRandomPending(true);
    setRandomError(null);
    try {
      const f = await api.randomFeature(name, analysis);
      queryClient.setQueryData(keys.feature(name, analysis, f.index), f);
      go(f.index);
    } catch (e) {
      setRandomError(e);
    } finally {
      setRandomPending(false);
    }
  };

  return (
    <main className="page">
      <nav className="breadcrumbs">
        <Link to="/">Dictionaries</Link> / <Link to={runPath(dictionaryParts(name).run)}>{dictionaryParts(name).run}</Link> /{" "}
        <Link to={dictionaryPath(name, analysis)}>{dictionaryParts(name).name ?? "dictionary"}</Link> / <span>{analysis}</span> /{" "}
        <span>feature {indexParam}</span>
      </nav>
      <header className="page-header feature-header">
        <h1>
          {annotation.data?.bookmarked && (
            <span className="bookmark-mark" title="bookmarked">
              ★{" "}
            </span>
          )}
          Feature <span data-testid="feature-index">#{indexParam}</span>
          {annotation.data?.label && (
            <span className="header-label" data-testid="feature-label">
              {" "}
              — {annotation.data.label}
            </span>
          )}
        </h1>
        {dict.data && (
          <span className="tags">
            <span className="tag">{dict.data.model_name}</span>
            <span className="tag mono">{hookLabel(dict.data)}</span>
            {dict.data.source && <SourceTag source={dict.data.source} />}
            {place.data && (
              <span className="tag" data-testid="feature-layer" title={`feature ${place.data.index} of the analysis is feature ${place.data.layer_index} of layer ${place.data.layer}`}>
                layer {place.data.layer} · #{place.data.layer_index} of the layer
              </span>
            )}
          </span>
        )}
      </header>
      <FeatureNav index={index} dSae={dSae} onGo={go} onRandom={random} randomPending={randomPending} />
      {randomError !== null && <ErrorMessage error={randomError} />}
      {index === null ? (
        <ErrorMessage error={new Error(`"${indexParam}" is not a feature index; use a whole number from 0${dSae ? ` to ${dSae - 1}` : ""}.`)} />
      ) : (
        <>
          {feature.isPending && <Loading label={`Loading feature ${index}…`} />}
          {feature.isError && <ErrorMessage error={feature.error} onRetry={() => feature.refetch()} />}
          {feature.data && (
            <FeatureBody
              name={name}
              analysis={analysis}
              f={feature.data}
              nTokens={summary?.n_tokens}
              probeText={probeText}
              onProbe={setProbeText}
              replacement={replacement}
              place={place.data}
            />
          )}
        </>
      )}
    </main>
  );
}

interface FeatureBodyProps {
  name: string;
  analysis: string;
  f: FeatureDetail;
  nTokens?: number;
  probeText: string | null;
  onProbe: (text: string) => void;
  /** a replacement model's feature: no steering or nearest features; where it writes instead */
  replacement: boolean;
  place?: ReplacementFeature;
}

function FeatureBody({ name, analysis, f, nTokens, probeText, onProbe, replacement, place }: FeatureBodyProps) {
  const [full, setFull] = useState(false);
  const contextWindow = full ? undefined : CONTEXT_WINDOW;
  const dead = f.act_count === 0 || f.max_act <= 0;
  return (
    <div className="feature-body" data-testid="feature-body" data-feature={f.index}>
      <dl className="stat-row" data-testid="feature-stats">
        <div className="stat" title="fraction of analysed tokens the feature fires on">
          <dt>Density</dt>
          <dd>
            {fmtDensity(f.density)} <span className="muted small">log₁₀ {log10Density(f.density)}</span>
          </dd>
        </div>
        <div className="stat">
          <dt>Max activation</dt>
          <dd data-testid="max-act">{fmt(f.max_act, 4)}</dd>
        </div>
        <div className="stat" title="mean over the tokens it fires on">
          <dt>Mean activation</dt>
          <dd>{fmt(f.mean_act, 4)}</dd>
        </div>
        <div className="stat">
          <dt>Fires on</dt>
          <dd>
            {fmtInt(f.act_count)}
            {nTokens ? <span className="muted small"> of {fmtInt(nTokens)} tokens</span> : " tokens"}
          </dd>
        </div>
      </dl>
      {dead && (
        <p className="notice" data-testid="dead-notice">
          Dead feature: it never fired on the analysed tokens, so there are no contexts to show.
        </p>
      )}
      <div className="feature-grid">
        <aside className="feature-side">
          <section className="card">
            <h2>Label and notes</h2>
            <AnnotationEditor key={`${name}#${f.index}`} dictionary={name} index={f.index} />
          </section>
          <section className="card">
            <h2>Explanation</h2>
            <ExplanationPanel key={`${name}#${analysis}#${f.index}`} dictionary={name} analysis={analysis} index={f.index} alive={!dead} />
          </section>
          <section className="card">
            <h2>Activation histogram</h2>
            <Histogram data={f.histogram} xLabel="activation" label="Activation histogram" />
          </section>
          <section className="card" data-testid="logit-lens">
            <h2>Logit lens</h2>
            {f.logit_lens.note && <p className="muted small">{f.logit_lens.note}</p>}
            {place && (
              <p className="muted small">
                Its decoder into layer {place.target_layers[place.target_layers.length - 1]}, the last layer it writes to, read through the
                unembedding.
              </p>
            )}
            <div className="logit-columns">
              <LogitLensTable title="Promoted tokens" tokens={f.logit_lens.positive} sign="positive" />
              <LogitLensTable title="Suppressed tokens" tokens={f.logit_lens.negative} sign="negative" />
            </div>
          </section>
          {place && (
            <section className="card">
              <h2>Writes to</h2>
              <DecoderNorms place={place} />
            </section>
          )}
          {!replacement && (
            <section className="card">
              <h2>Similar features</h2>
              <SimilarFeatures key={`${name}#${f.index}`} dictionary={name} analysis={analysis} index={f.index} />
            </section>
          )}
        </aside>
        <div className="feature-main">
          <section className="card">
            <h2>Try it on text</h2>
            <FeatureActivationInput dictionary={name} feature={f.index} maxAct={f.max_act} text={probeText} onRun={onProbe} />
          </section>
          {!replacement && (
            <section className="card">
              <h2>Steer the model with it</h2>
              <SteeringPanel key={`${name}#${f.index}`} dictionary={name} feature={f.index} maxAct={f.max_act} />
            </section>
          )}
          <section className="card" data-testid="top-contexts">
            <div className="section-head">
              <h2>Top activations</h2>
              <label className="checkbox">
                <input type="checkbox" checked={full} onChange={(e) => setFull(e.target.checked)} /> full contexts
              </label>
            </div>
            <SampleList samples={f.top} scale={f.max_act} window={contextWindow} emptyText="No activating contexts recorded." />
          </section>
          <section className="card" data-testid="intervals">
            <h2>Samples by activation interval</h2>
            <IntervalGroups groups={f.intervals} scale={f.max_act} window={contextWindow} />
          </section>
        </div>
      </div>
    </div>
  );
}
