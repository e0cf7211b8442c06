import { useMutation } from "@tanstack/react-query";
import { useMemo, useState } from "react";
import { Link, useParams } from "react-router";
import { api, type GraphFile, type GraphNode, type InterventionResult } from "../api";
import { ErrorMessage, Loading } from "../components/QueryState";
import { SampleList } from "../components/SampleList";
import { fmt, fmtInt } from "../format";
import {
  edgeColour, ERROR, featureOf, isFeature, layerCount, layoutGraph, LOGIT, logitToken, MARGIN, nodeTitle, strokeWidth, TOKEN,
  visibleNodes, type GraphLayout, type Placed,
} from "../graphLayout";
import { dictionaryLabel, dictionaryPath, featurePath } from "../paths";
import { useDictionary, useFeature, useGraph } from "../queries";
import { TokenText } from "../components/TokenText";
import { useTitle } from "../useTitle";

/** `/dictionaries/:name/graphs/:slug`: an attribution graph, its nodes by layer and position. */
export function GraphPage() {
  const { name = "", slug = "" } = useParams();
  useTitle(`${slug} — ${dictionaryLabel(name)}`);
  const dict = useDictionary(name);
  const graph = useGraph(name, slug);
  return (
    <main className="page graph-page">
      <nav className="breadcrumbs">
        <Link to="/">Dictionaries</Link> / <Link to={dictionaryPath(name)}>{dictionaryLabel(name)}</Link> / <span>graph {slug}</span>
      </nav>
      {graph.isPending && <Loading label="Loading graph…" />}
      {graph.isError && <ErrorMessage error={graph.error} onRetry={() => graph.refetch()} />}
      {graph.data && <GraphView key={slug} name={name} slug={slug} graph={graph.data} analyses={dict.data?.analyses ?? []} />}
    </main>
  );
}

interface SubgraphState {
  pinned: string[];
  supernodes: string[][];
  clicked: string;
}

function GraphView({ name, slug, graph, analyses }: { name: string; slug: string; graph: GraphFile; analyses: string[] }) {
  const tokens = graph.metadata.prompt_tokens;
  // At 1 the slider shows every node of the file (the one that crossed the file's own threshold included);
  // lower, it re-prunes.
  const [threshold, setThreshold] = useState(1);
  const [sub, setSub] = useState<SubgraphState>({
    pinned: graph.qParams.pinnedIds ?? [], supernodes: graph.qParams.supernodes ?? [], clicked: graph.qParams.clickedId ?? "",
  });
  const [subgraphOnly, setSubgraphOnly] = useState(false);
  const [hover, setHover] = useState<{ id: string; x: number; y: number } | null>(null);
  const hovered = hover?.id ?? null;
  const [dirty, setDirty] = useState(false);
  const nLayers = useMemo(() => layerCount(graph.nodes), [graph]);
  const pinnedSet = useMemo(() => new Set(sub.pinned), [sub.pinned]);
  const shown = useMemo(() => visibleNodes(graph.nodes, threshold, pinnedSet, subgraphOnly ? pinnedSet : undefined),
                        [graph, threshold, pinnedSet, subgraphOnly]);
  const layout = useMemo(() => layoutGraph(shown, graph.links, tokens, nLayers), [shown, graph, tokens, nLayers]);
  const byId = useMemo(() => new Map(graph.nodes.map((n) => [n.node_id, n])), [graph]);
  const groupOf = useMemo(() => {
    const m = new Map<string, string>();
    for (const [label, ...ids] of sub.supernodes) for (const id of ids) m.set(id, label);
    return m;
  }, [sub.supernodes]);

  const change = (next: Partial<SubgraphState>) => {
    setSub((s) => ({ ...s, ...next }));
    setDirty(true);
  };
  const togglePin = (id: string) => change({ pinned: pinnedSet.has(id) ? sub.pinned.filter((p) => p !== id) : [...sub.pinned, id] });
  const save = useMutation({
    mutationFn: () => api.saveSubgraph(name, slug, { pinnedIds: sub.pinned, supernodes: sub.supernodes, clickedId: sub.clicked }),
    onSuccess: () => setDirty(false),
  });
  const clicked = sub.clicked ? byId.get(sub.clicked) : undefined;
  const scores = graph.metadata.scores;
  const nFeatures = graph.nodes.filter(isFeature).length;

  return (
    <>
      <header className="page-header">
        <h1>
          Attribution graph: <span className="prompt-text" data-testid="graph-prompt">{graph.metadata.prompt}</span>
        </h1>
        <span className="tags">
          <span className="tag">{graph.metadata.scan}</span>
          <span className="tag">{fmtInt(nFeatures)} features</span>
          <span className="tag">{fmtInt(graph.links.length)} edges</span>
          {scores && (
            <span className="tag" title="replacement score / completeness score (circuit-tracer's definitions)" data-testid="graph-scores">
              replacement {fmt(scores.replacement, 3)} · completeness {fmt(scores.completeness, 3)}
            </span>
          )}
        </span>
      </header>
      <section className="card graph-controls">
        <label className="threshold">
          Node threshold <strong data-testid="threshold-value">{threshold.toFixed(2)}</strong>
          <input type="range" min={0.05} max={1} step={0.01} value={threshold} aria-label="Node threshold"
                 onChange={(e) => setThreshold(Number(e.target.value))} />
        </label>
        <label>
          <input type="checkbox" checked={subgraphOnly} onChange={(e) => setSubgraphOnly(e.target.checked)} disabled={sub.pinned.length === 0} />
          {" "}Pinned nodes only
        </label>
        <span className="muted small" data-testid="shown-count">
          {layout.nodes.length} nodes, {layout.links.length} edges shown
        </span>
        <span className="legend small">
          <span style={{ color: edgeColour(1) }}>━ excites</span> <span style={{ color: edgeColour(-1) }}>━ inhibits</span> · click: details · shift-click: pin
        </span>
      </section>
      <div className="graph-layout">
        <section className="card graph-canvas" data-testid="graph-canvas">
          <GraphSvg layout={layout} tokens={tokens} pinned={pinnedSet} groupOf={groupOf} clicked={sub.clicked} hovered={hovered}
                    onHover={setHover} onClick={(id, shift) => (shift ? togglePin(id) : change({ clicked: id }))} />
          {hover && byId.get(hover.id) && <Tooltip node={byId.get(hover.id)!} x={hover.x} y={hover.y} tokens={tokens} />}
        </section>
        <aside className="graph-side">
          {clicked ? (
            <NodePanel name={name} node={clicked} tokens={tokens} analyses={analyses} pinned={pinnedSet.has(clicked.node_id)}
                       onPin={() => togglePin(clicked.node_id)} />
          ) : (
            <section className="card"><p className="muted small">Click a node for its details.</p></section>
          )}
          <SubgraphPanel sub={sub} byId={byId} tokens={tokens} dirty={dirty} saving={save.isPending}
                         saveError={save.error} onChange={change} onSave={() => save.mutate()} />
          <InterventionPanel name={name} slug={slug} nodes={sub.pinned.map((id) => byId.get(id)).filter((n): n is GraphNode => !!n && isFeature(n))} />
        </aside>
      </div>
    </>
  );
}

function nodeShape(p: Placed, highlight: boolean) {
  const { node, x, y } = p;
  const stroke = highlight ? "#111827" : "#4b5563";
  if (node.feature_type === TOKEN) return <rect x={x - 7} y={y - 7} width={14} height={14} rx={3} fill="#d1d5db" stroke={stroke} />;
  if (node.feature_type === LOGIT) return <polygon points={`${x},${y - 9} ${x + 9},${y} ${x},${y + 9} ${x - 9},${y}`} fill="#fde68a" stroke={stroke} />;
  if (node.feature_type === ERROR) return <rect x={x - 5} y={y - 5} width={10} height={10} fill="#9ca3af" stroke={stroke} />;
  return <circle cx={x} cy={y} r={6} fill="#c4b5fd" stroke={stroke} />;
}

interface GraphSvgProps {
  layout: GraphLayout;
  tokens: string[];
  pinned: ReadonlySet<string>;
  groupOf: Map<string, string>;
  clicked: string;
  hovered: string | null;
  /** the node under the pointer, at its position in the canvas (the SVG scales to fit) */
  onHover: (hover: { id: string; x: number; y: number } | null) => void;
  onClick: (id: string, shift: boolean) => void;
}

/** The graph: rows by layer (embeddings at the bottom, logits on top), columns by token position. */
function GraphSvg({ layout, tokens, pinned, groupOf, clicked, hovered, onHover, onClick }: GraphSvgProps) {
  const focus = hovered ?? (clicked || null);
  return (
    <svg viewBox={`0 0 ${layout.width} ${layout.height}`} width="100%" style={{ maxWidth: layout.width }} className="graph-svg"
         role="img" aria-label="attribution graph">
      {layout.columns.map((c, i) => (
        <g key={i}>
          <rect x={c.left} y={MARGIN.top - 16} width={c.width} height={layout.height - MARGIN.top - MARGIN.bottom + 32}
                fill={i % 2 ? "#f9fafb" : "#ffffff"} />
          <text x={c.x} y={layout.height - 12} textAnchor="middle" className="graph-token" data-testid="graph-token">
            {tokens[i]}
          </text>
        </g>
      ))}
      {layout.rows.map((r) => (
        <text key={r.label} x={8} y={r.y + 4} className="graph-row-label">{r.label}</text>
      ))}
      <g>
        {layout.links.map(({ link, source, target }) => {
          const near = focus !== null && (link.source === focus || link.target === focus);
          return (
            <line key={`${link.source}>${link.target}`} x1={source.x} y1={source.y} x2={target.x} y2={target.y}
                  stroke={edgeColour(link.weight)} strokeWidth={strokeWidth(link.weight, layout.maxAbsWeight) * (near ? 1.6 : 1)}
                  strokeOpacity={focus === null ? 0.45 : near ? 0.95 : 0.08} data-testid="graph-edge"
                  data-weight={link.weight} />
          );
        })}
      </g>
      {layout.nodes.map((p) => {
        const id = p.node.node_id;
        return (
          <g key={id} data-testid="graph-node" data-node-id={id} data-kind={p.node.feature_type}
             className={`graph-node${pinned.has(id) ? " pinned" : ""}${clicked === id ? " clicked" : ""}`}
             tabIndex={0} role="button" aria-label={nodeTitle(p.node, tokens)}
             onMouseEnter={(e) => {
               const canvas = (e.currentTarget.closest(".graph-canvas") as HTMLElement).getBoundingClientRect();
               const box = e.currentTarget.getBoundingClientRect();
               onHover({ id, x: box.right - canvas.left, y: box.bottom - canvas.top });
             }}
             onMouseLeave={() => onHover(null)}
             onClick={(e) => onClick(id, e.shiftKey)} onKeyDown={(e) => e.key === "Enter" && onClick(id, e.shiftKey)}>
            {groupOf.has(id) && <circle cx={p.x} cy={p.y} r={11} fill="none" stroke="#059669" strokeWidth={2} strokeDasharray="3 2" />}
            {pinned.has(id) && <circle cx={p.x} cy={p.y} r={9} fill="none" stroke="#111827" strokeWidth={1.5} />}
            {nodeShape(p, clicked === id)}
            {p.node.feature_type === LOGIT && (
              <text x={p.x} y={p.y - 13} textAnchor="middle" className="graph-logit-label">{logitToken(p.node)}</text>
            )}
          </g>
        );
      })}
    </svg>
  );
}

function Tooltip({ node: n, x, y, tokens }: { node: GraphNode; x: number; y: number; tokens: string[] }) {
  return (
    <div className="graph-tooltip" style={{ left: x + 4, top: y + 4 }} data-testid="graph-tooltip" role="tooltip">
      <div className="graph-tooltip-title">{nodeTitle(n, tokens)}</div>
      {n.activation != null && <div>activation <strong>{fmt(n.activation, 3)}</strong></div>}
      {n.influence != null && <div>influence (cumulative) <strong>{fmt(n.influence, 3)}</strong></div>}
      {n.feature_type === LOGIT && <div>probability <strong>{fmt(n.token_prob, 3)}</strong></div>}
    </div>
  );
}

function NodePanel({ name, node, tokens, analyses, pinned, onPin }: {
  name: string; node: GraphNode; tokens: string[]; analyses: string[]; pinned: boolean; onPin: () => void;
}) {
  return (
    <section className="card" data-testid="node-panel" data-node-id={node.node_id}>
      <div className="section-head">
        <h2>{node.feature_type === TOKEN ? "Token" : node.feature_type === LOGIT ? "Output" : node.feature_type === ERROR ? "Error node" : "Feature"}</h2>
        <button type="button" className="btn btn-small" onClick={onPin}>{pinned ? "Unpin" : "Pin"}</button>
      </div>
      <p className="small">{nodeTitle(node, tokens)}</p>
      <p className="small muted">
        position {node.ctx_idx} <TokenText token={tokens[node.ctx_idx] ?? ""} />
        {node.activation != null && <> · activation {fmt(node.activation, 3)}</>}
        {node.influence != null && <> · influence {fmt(node.influence, 3)}</>}
      </p>
      {isFeature(node) && <FeatureCard name={name} node={node} analyses={analyses} />}
    </section>
  );
}

/** A feature node's card: its label and top activations from the dictionary's analysis, and a link to its page. */
function FeatureCard({ name, node, analyses }: { name: string; node: GraphNode; analyses: string[] }) {
  const analysis = analyses[0];
  const index = node.feature_index ?? null;
  const feature = useFeature(name, analysis ?? "", analysis ? index : null);
  const { layer, feature: own } = featureOf(node);
  if (index === null) return <p className="muted small">Feature {own} of layer {layer} has no index in this dictionary's analyses.</p>;
  if (!analysis) return <p className="muted small" data-testid="feature-card">No analysis of this replacement model yet (run the analyzer on it to see what feature {index} responds to).</p>;
  return (
    <div data-testid="feature-card">
      <p className="small">
        <Link to={featurePath(name, analysis, index)} data-testid="feature-page-link">Feature #{index}</Link>
        {node.clerp ? <> — <strong>{node.clerp}</strong></> : <span className="muted"> (no label)</span>}
      </p>
      {feature.isPending && <Loading label="Loading its top activations…" />}
      {feature.isError && <ErrorMessage error={feature.error} />}
      {feature.data && (
        <>
          <p className="small muted">max activation {fmt(feature.data.max_act, 3)} · density {fmt(feature.data.density, 4)}</p>
          <SampleList samples={feature.data.top.slice(0, 5)} scale={feature.data.max_act} window={{ before: 8, after: 3 }}
                      emptyText="No activating contexts recorded." />
        </>
      )}
    </div>
  );
}

function SubgraphPanel({ sub, byId, tokens, dirty, saving, saveError, onChange, onSave }: {
  sub: SubgraphState; byId: Map<string, GraphNode>; tokens: string[]; dirty: boolean; saving: boolean; saveError: unknown;
  onChange: (next: Partial<SubgraphState>) => void; onSave: () => void;
}) {
  const [checked, setChecked] = useState<string[]>([]);
  const [label, setLabel] = useState("");
  const grouped = new Set(sub.supernodes.flatMap(([, ...ids]) => ids));
  const group = () => {
    onChange({ supernodes: [...sub.supernodes, [label.trim(), ...checked]] });
    setChecked([]);
    setLabel("");
  };
  return (
    <section className="card" data-testid="subgraph-panel">
      <div className="section-head">
        <h2>Subgraph</h2>
        <button type="button" className="btn btn-small" onClick={onSave} disabled={!dirty || saving}>
          {saving ? "Saving…" : dirty ? "Save subgraph" : "Saved"}
        </button>
      </div>
      {saveError ? <ErrorMessage error={saveError} /> : null}
      {sub.pinned.length === 0 ? (
        <p className="muted small">Pin nodes (shift-click, or Pin in a node's details) to build a subgraph.</p>
      ) : (
        <ul className="pinned-list" data-testid="pinned-list">
          {sub.pinned.map((id) => {
            const node = byId.get(id);
            return (
              <li key={id} data-node-id={id}>
                <label>
                  <input type="checkbox" checked={checked.includes(id)} disabled={grouped.has(id)}
                         onChange={(e) => setChecked(e.target.checked ? [...checked, id] : checked.filter((c) => c !== id))} />{" "}
                  <span className="small">{node ? nodeTitle(node, tokens) : id}</span>
                </label>
                <button type="button" className="link-button small" onClick={() => onChange({ pinned: sub.pinned.filter((p) => p !== id) })}>unpin</button>
              </li>
            );
          })}
        </ul>
      )}
      {sub.pinned.length > 0 && (
        <div className="supernode-form">
          <input type="text" placeholder="Supernode name" aria-label="Supernode name" value={label} maxLength={120}
                 onChange={(e) => setLabel(e.target.value)} />
          <button type="button" className="btn btn-small" disabled={!label.trim() || checked.length === 0} onClick={group}>
            Group checked
          </button>
        </div>
      )}
      {sub.supernodes.length > 0 && (
        <ul className="supernode-list" data-testid="supernodes">
          {sub.supernodes.map(([name, ...ids], i) => (
            <li key={i} data-testid="supernode">
              <strong>{name}</strong> <span className="muted small">({ids.length} nodes)</span>{" "}
              <button type="button" className="link-button small" onClick={() => onChange({ supernodes: sub.supernodes.filter((_, j) => j !== i) })}>ungroup</button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/** Ablate or scale the pinned feature nodes and compare the next-token distributions. */
function InterventionPanel({ name, slug, nodes }: { name: string; slug: string; nodes: GraphNode[] }) {
  const [scales, setScales] = useState<Record<string, number>>({});
  const [propagate, setPropagate] = useState(true);
  const run = useMutation({
    mutationFn: () => api.intervene(name, slug, {
      interventions: nodes.map((n) => ({ node_id: n.node_id, scale: scales[n.node_id] ?? 0 })), top_k: 8, propagate,
    }),
  });
  return (
    <section className="card" data-testid="intervention-panel">
      <h2>Intervene</h2>
      {nodes.length === 0 ? (
        <p className="muted small">Pin feature nodes to ablate (scale 0) or scale them and see the new next tokens.</p>
      ) : (
        <>
          <ul className="intervention-list">
            {nodes.map((n) => (
              <li key={n.node_id}>
                <span className="small">{featureOf(n).feature}@L{featureOf(n).layer}·{n.ctx_idx}</span>{" "}
                <label className="small">
                  × <input type="number" step={0.5} value={scales[n.node_id] ?? 0} aria-label={`scale of ${n.node_id}`}
                           onChange={(e) => setScales({ ...scales, [n.node_id]: Number(e.target.value) })} />
                </label>
              </li>
            ))}
          </ul>
          <label className="small">
            <input type="checkbox" checked={propagate} onChange={(e) => setPropagate(e.target.checked)} /> later features respond
          </label>{" "}
          <button type="button" className="btn btn-small" onClick={() => run.mutate()} disabled={run.isPending}>
            {run.isPending ? "Running…" : "Run"}
          </button>
          {run.isError && <ErrorMessage error={run.error} />}
          {run.data && <InterventionTable result={run.data} />}
        </>
      )}
    </section>
  );
}

function InterventionTable({ result }: { result: InterventionResult }) {
  return (
    <table className="intervention-table" data-testid="intervention-result">
      <thead>
        <tr><th>original</th><th>p</th><th>after</th><th>p</th></tr>
      </thead>
      <tbody>
        {result.original.map((t, i) => (
          <tr key={i}>
            <td><TokenText token={t.token} /></td>
            <td>{fmt(t.probability, 3)}</td>
            <td><TokenText token={result.intervened[i]?.token ?? ""} /></td>
            <td>{fmt(result.intervened[i]?.probability ?? 0, 3)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
