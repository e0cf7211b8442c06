// Client-side routes: the URL holds what is shown, so any view can be shared as a link.
const enc = encodeURIComponent;

export const dictionaryPath = (name: string, analysis?: string) =>
  `/dictionaries/${enc(name)}${analysis ? `?analysis=${enc(analysis)}` : ""}`;

export const featurePath = (name: string, analysis: string, index: number) =>
  `/dictionaries/${enc(name)}/analyses/${enc(analysis)}/features/${index}`;

export const runPath = (run: string) => `/runs/${enc(run)}`;

export const graphPath = (name: string, slug: string) => `/dictionaries/${enc(name)}/graphs/${enc(slug)}`;
/** The compare page of a run's dictionaries (`space`: which model-and-hook group), or of chosen dictionaries. */
export function comparePath(q: { run?: string; space?: number; dictionaries?: string[] }): string {
  const params = new URLSearchParams();
  if (q.run !== undefined) params.set("run", q.run);
  if (q.space) params.set("space", String(q.space));
  for (const d of q.dictionaries ?? []) params.append("dictionary", d);
  return `/compare?${params.toString()}`;
}

/** Short names for plot labels: what the dictionaries' names do not share ("k16" for "res3-k16" among "res3-k*"). */
export function shortNames(names: string[]): string[] {
  if (names.length < 2) return names;
  let prefix = names.reduce((a, b) => {
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return a.slice(0, i);
  });
  prefix = prefix.slice(0, Math.max(...[".", "-", "_", "/"].map((c) => prefix.lastIndexOf(c))) + 1); // whole words only
  return names.map((n) => n.slice(prefix.length) || n);
}

/** A dictionary id `<run>:<name>` as its parts (an older run's only dictionary is just `<run>`). */
export function dictionaryParts(id: string): { run: string; name: string | null } {
  const at = id.indexOf(":");
  return at < 0 ? { run: id, name: null } : { run: id.slice(0, at), name: id.slice(at + 1) };
}

/** How an id is shown: "run / name" (or the run alone). */
export function dictionaryLabel(id: string): string {
  const { run, name } = dictionaryParts(id);
  return name === null ? run : `${run} / ${name}`;
}

/** Layers as ranges: [0, 1, 2, 5] → "0–2, 5". */
export function layerRanges(layers: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < layers.length; ) {
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[j] + 1) j++;
    parts.push(j > i ? `${layers[i]}–${layers[j]}` : `${layers[i]}`);
    i = j + 1;
  }
  return parts.join(", ");
}

type Hooks = { hook_name: string; hook_out?: string | null; layers?: number[] | null };

/** A dictionary's hook(s): "in → out" for a transcoder; a replacement model's per-layer hooks over its layers
 * ("layers 0–5: ln2.hook_normalized → hook_mlp_out"). */
export function hookLabel(d: Hooks): string {
  if (d.layers && d.layers.length > 0) {
    const local = (hook: string) => hook.replace(/^blocks\.\d+\./, "");
    return `layers ${layerRanges(d.layers)}: ${local(d.hook_name)}${d.hook_out ? ` → ${local(d.hook_out)}` : ""}`;
  }
  return d.hook_out ? `${d.hook_name} → ${d.hook_out}` : d.hook_name;
}

/** What a dictionary is: "topk", "topk transcoder", "batchtopk cross-layer transcoder", "topk transcoder set". */
export function architectureLabel(d: Hooks & { architecture: string; kind?: string }): string {
  if (d.kind === "cross_layer_transcoder") return `${d.architecture} cross-layer transcoder`;
  if (d.kind === "transcoder_set") return `${d.architecture} transcoder set`;
  return d.hook_out ? `${d.architecture} transcoder` : d.architecture;
}

/** A replacement model: a transcoder set or a cross-layer transcoder (features of several layers). */
export const isReplacement = (d: { kind?: string } | undefined): boolean =>
  !!d && d.kind !== undefined && d.kind !== "sparse_autoencoder";
