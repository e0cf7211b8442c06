// Client-side routes: the URL holds what is shown, so any view can be shared as a link.
const enc = encodeURIComponent;

export const dictionaryPath = (name: string, analysis?: string) =>
  `/dictionaries/${enc(name)}${analysis ? `?analysis=${enc(analysis)}` : ""}`;

export const featurePath = (name: string, analysis: string, index: number) =>
  `/dictionaries/${enc(name)}/analyses/${enc(analysis)}/features/${index}`;
