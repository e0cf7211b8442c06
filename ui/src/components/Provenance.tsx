import type { Provenance } from "../api";

const FORMAT_NAMES: Record<string, string> = { saelens: "SAELens", sparsify: "sparsify" };

/** "SAELens 6.54.12", "sparsify": the library (and format version) an imported dictionary came from. */
export function sourceFormat(source: Provenance): string {
  const name = FORMAT_NAMES[source.format] ?? source.format;
  return source.version && source.format !== "sparsify" ? `${name} ${source.version}` : name;
}

/** A short tag for lists and headers: where an imported dictionary came from. */
export function SourceTag({ source }: { source: Provenance }) {
  const origin = source.release ? `${source.release} / ${source.sae_id}` : source.path ?? "";
  return (
    <span className="tag source-tag" title={`imported from ${sourceFormat(source)}${origin ? `: ${origin}` : ""}`} data-testid="source-tag">
      from {FORMAT_NAMES[source.format] ?? source.format}
    </span>
  );
}

/** Everything the import recorded: format, release and id, original names, checksum, conversions. */
export function ProvenanceCard({ source }: { source: Provenance }) {
  const hubUrl = source.repo_id
    ? `https://huggingface.co/${source.repo_id}/tree/main${source.repo_folder ? `/${source.repo_folder}` : ""}`
    : undefined;
  const rows: [string, React.ReactNode, string][] = [
    ["Format", sourceFormat(source), "the library whose folder this dictionary was converted from"],
  ];
  if (source.release) rows.push(["SAELens release", source.release, "the release it was downloaded as"]);
  if (source.sae_id) rows.push(["SAELens id", <span className="mono">{source.sae_id}</span>, "its id in that release"]);
  if (hubUrl)
    rows.push([
      "Hugging Face",
      <a href={hubUrl} target="_blank" rel="noreferrer" className="mono">
        {source.repo_id}
        {source.repo_folder ? `/${source.repo_folder}` : ""}
      </a>,
      "the repository and folder it came from",
    ]);
  if (source.neuronpedia_id)
    rows.push([
      "Neuronpedia",
      <a href={`https://www.neuronpedia.org/${source.neuronpedia_id}`} target="_blank" rel="noreferrer">
        {source.neuronpedia_id}
      </a>,
      "its id on Neuronpedia",
    ]);
  if (source.model_name) rows.push(["Original model", source.model_name, "the model name its own config gave"]);
  if (source.hook_name) rows.push(["Original hook", <span className="mono">{source.hook_name}</span>, "the hook name its own config gave"]);
  if (source.architecture)
    rows.push([
      "Original architecture",
      source.training_architecture && source.training_architecture !== source.architecture
        ? `${source.architecture} (trained as ${source.training_architecture})`
        : source.architecture,
      "the architecture its own config gave",
    ]);
  if (source.path) rows.push(["Imported from", <span className="mono break">{source.path}</span>, "the folder it was converted from"]);
  if (source.sha256)
    rows.push(["Weights SHA-256", <span className="mono" title={source.sha256}>{source.sha256.slice(0, 16)}…</span>, "checksum of the weights file it was converted from"]);
  return (
    <section className="card" data-testid="provenance">
      <h2>Imported from {sourceFormat(source)}</h2>
      <dl className="stat-grid provenance-grid">
        {rows.map(([label, value, title]) => (
          <div key={label} className="stat" title={title}>
            <dt>{label}</dt>
            <dd>{value}</dd>
          </div>
        ))}
      </dl>
      {source.conversions && source.conversions.length > 0 && (
        <>
          <p className="muted">Converted exactly; what the import changed to represent it here:</p>
          <ul className="conversions">
            {source.conversions.map((c) => (
              <li key={c}>{c}</li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
