// Client-side routes: the URL holds what is shown, so any view can be shared as a link.
const enc = encodeURIComponent;

export const dictionaryPath = (name: string, analysis?: string) =>
  `/dictionaries/${enc(name)}${analysis ? `?analysis=${enc(analysis)}` : ""}`;

export const featurePath = (name: string, analysis: string, index: number) =>
  `/dictionaries/${enc(name)}/analyses/${enc(analysis)}/features/${index}`;

export const runPath = (run: string) => `/runs/${enc(run)}`;

export const graphPath = (name: string, slug: string) => `/dictionaries/${enc(name)}/graphs/${enc(slug)}`;

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

/** A dictionary's hook(s): "in → out" for a transcoder. */
export function hookLabel(d: { hook_name: string; hook_out?: string | null }): string {
  return d.hook_out ? `${d.hook_name} → ${d.hook_out}` : d.hook_name;
}
