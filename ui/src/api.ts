// Typed client for the viewer's HTTP API. Types mirror server/API.md one to one.

export interface Histogram {
  edges: number[]; // n + 1 bin edges
  counts: number[]; // n counts
}

export interface FeatureStats {
  index: number;
  act_count: number;
  density: number;
  max_act: number;
  mean_act: number;
}

export interface Sample {
  token_ids: number[];
  tokens: string[];
  acts: number[];
  max_pos: number;
  max_act: number;
}

export interface Group {
  name: string;
  lower: number;
  upper: number;
  samples: Sample[];
}

export interface LogitToken {
  token_id: number;
  token: string;
  value: number;
}

/** Every key is optional: a dictionary saved without evaluation has `{}`. */
export interface Metrics {
  l0?: number;
  explained_variance?: number;
  mse?: number;
  ce_loss_recovered?: number;
  ce_loss_clean?: number;
  ce_loss_reconstructed?: number;
  ce_loss_zero_ablation?: number;
  kl_divergence?: number;
  unfired_features?: number;
  /** Older dictionaries' name of unfired_features. */
  dead_features?: number;
  dense_features?: number;
  [key: string]: number | undefined;
}

export interface AnalysisSummary {
  name: string;
  n_tokens: number;
  n_features: number;
  n_alive: number;
  n_dead: number;
  density_histogram: Histogram;
}

export interface DictionarySummary {
  name: string;
  model_name: string;
  hook_name: string;
  architecture: string;
  d_in: number;
  d_sae: number;
  metrics: Metrics;
  analyses: string[];
}

export interface DictionaryDetail extends DictionarySummary {
  config: Record<string, unknown>;
  analysis_summaries: AnalysisSummary[];
}

export interface Health {
  status: string;
  results_dir: string;
  n_dictionaries: number;
}

export type FeatureSort = "index" | "density" | "max_act" | "mean_act" | "act_count";
export const FEATURE_SORTS: FeatureSort[] = ["index", "density", "max_act", "mean_act", "act_count"];

export interface FeatureQuery {
  sort?: FeatureSort;
  order?: "asc" | "desc";
  min_density?: number;
  max_density?: number;
  min_max_act?: number;
  offset?: number;
  limit?: number;
}

export interface FeaturePage {
  total: number;
  offset: number;
  limit: number;
  features: FeatureStats[];
}

export interface FeatureDetail extends FeatureStats {
  d_sae: number;
  histogram: Histogram;
  logit_lens: { positive: LogitToken[]; negative: LogitToken[]; note: string | null };
  top: Sample[];
  intervals: Group[]; // highest interval first
}

export interface ActivationsRequest {
  text: string;
  feature?: number | null;
  top_k?: number;
}

export interface ActivationsResult {
  token_ids: number[];
  tokens: string[];
  feature: { index: number; acts: number[] } | null;
  /** each token's strongest active (act > 0) features, strongest first; may be empty */
  top_features: { index: number; act: number }[][];
  /** the text had more tokens than the server's limit and was cut there */
  truncated?: boolean;
}

/** Base URL of the API server; empty means the page's own origin. */
export const BACKEND_URL: string = (import.meta.env.VITE_BACKEND_URL ?? "").replace(/\/+$/, "");

export function serverLabel(): string {
  if (BACKEND_URL) return BACKEND_URL;
  return typeof window !== "undefined" ? window.location.origin : "(same origin)";
}

/** The server answered with an error status; `detail` is its one-sentence explanation. */
export class ApiError extends Error {
  readonly status: number;
  readonly detail: string;
  constructor(status: number, detail: string) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

/** The request never got an answer: the server is down or the URL is wrong. */
export class NetworkError extends Error {
  constructor(url: string, why = "the request failed") {
    super(`Cannot reach the server at ${serverLabel()} (${url}: ${why}). Is it running? Start it with: uvicorn server.app:app --port 24577`);
    this.name = "NetworkError";
  }
}

/** `detail` is a string (API.md); FastAPI's default 422 list is handled too, just in case. */
function detailText(body: unknown, status: number): string {
  const detail = (body as { detail?: unknown } | null)?.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d: { loc?: unknown[]; msg?: string }) => {
        const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "query" && p !== "path" && p !== "body").join(".") : "";
        return where ? `${where}: ${d.msg ?? "invalid"}` : (d.msg ?? "invalid value");
      })
      .join("; ");
  }
  return `The server answered HTTP ${status}.`;
}

async function request<T>(path: string, init?: RequestInit): Promise<T> {
  const url = `${BACKEND_URL}${path}`;
  let response: Response;
  try {
    response = await fetch(url, { ...init, headers: { Accept: "application/json", ...init?.headers } });
  } catch (err) {
    if (init?.signal?.aborted) throw err;
    throw new NetworkError(url);
  }
  const isJson = (response.headers.get("content-type") ?? "").includes("json");
  const body: unknown = isJson ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    if (!isJson && response.status >= 500) {
      // e.g. the Vite dev proxy answering for an API server that is not running
      throw new NetworkError(url, `HTTP ${response.status} without a JSON body, as a proxy answers when the API server behind it is down`);
    }
    throw new ApiError(response.status, detailText(body, response.status));
  }
  if (!isJson) {
    throw new ApiError(response.status, `Expected JSON from ${url} but got ${response.headers.get("content-type") ?? "no content type"}; check VITE_BACKEND_URL.`);
  }
  return body as T;
}

const enc = encodeURIComponent;

function query(params: object): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "" && !(typeof v === "number" && Number.isNaN(v))) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const api = {
  health: (signal?: AbortSignal) => request<Health>("/api/health", { signal }),
  dictionaries: (signal?: AbortSignal) =>
    request<{ dictionaries: DictionarySummary[] }>("/api/dictionaries", { signal }).then((r) => r.dictionaries),
  dictionary: (name: string, signal?: AbortSignal) => request<DictionaryDetail>(`/api/dictionaries/${enc(name)}`, { signal }),
  features: (name: string, analysis: string, q: FeatureQuery, signal?: AbortSignal) =>
    request<FeaturePage>(`/api/dictionaries/${enc(name)}/analyses/${enc(analysis)}/features${query(q)}`, { signal }),
  feature: (name: string, analysis: string, index: number, signal?: AbortSignal) =>
    request<FeatureDetail>(`/api/dictionaries/${enc(name)}/analyses/${enc(analysis)}/features/${index}`, { signal }),
  randomFeature: (name: string, analysis: string) =>
    request<FeatureDetail>(`/api/dictionaries/${enc(name)}/analyses/${enc(analysis)}/features/random`, { cache: "no-store" }),
  activations: (name: string, body: ActivationsRequest) =>
    request<ActivationsResult>(`/api/dictionaries/${enc(name)}/activations`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }),
};
