// React Query hooks over the API client: one cache key scheme for the whole app.
import { keepPreviousData, QueryClient, useQuery } from "@tanstack/react-query";
import { api, type FeatureQuery } from "./api";

export function createQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      // Errors are shown with a Retry button instead of silently retrying: a 404 will not
      // go away, and "server down" should be visible at once.
      queries: { retry: false, staleTime: 60_000, refetchOnWindowFocus: false },
      mutations: { retry: false },
    },
  });
}

export const keys = {
  dictionaries: ["dictionaries"] as const,
  dictionary: (name: string) => ["dictionary", name] as const,
  features: (name: string, analysis: string, q: FeatureQuery) => ["features", name, analysis, q] as const,
  /** every feature-table page of a dictionary (their labels change when one is saved) */
  featureLists: (name: string) => ["features", name] as const,
  feature: (name: string, analysis: string, index: number) => ["feature", name, analysis, index] as const,
  /** a feature's explanations (an explain job adds one) */
  explanations: (name: string, analysis: string, index: number) => ["explanations", name, analysis, index] as const,
  replacementFeature: (name: string, index: number) => ["replacement-feature", name, index] as const,
  compare: (run: string | undefined, space: number, dictionaries: string[]) => ["compare", run ?? "", space, ...dictionaries] as const,
  annotation: (name: string, index: number) => ["annotation", name, index] as const,
  labels: (name: string) => ["labels", name] as const,
  similar: (name: string, index: number, other: string | undefined) => ["similar", name, index, other ?? ""] as const,
  tokenSearch: (name: string, analysis: string, q: string) => ["token-search", name, analysis, q] as const,
  graphs: (name: string) => ["graphs", name] as const,
  graph: (name: string, slug: string) => ["graph", name, slug] as const,
  runs: ["runs"] as const,
  run: (run: string) => ["run", run] as const,
};

export const useDictionaries = () =>
  useQuery({ queryKey: keys.dictionaries, queryFn: ({ signal }) => api.dictionaries(signal) });

export const useHealth = (enabled: boolean) =>
  useQuery({ queryKey: ["health"], queryFn: ({ signal }) => api.health(signal), enabled });

export const useDictionary = (name: string) =>
  useQuery({ queryKey: keys.dictionary(name), queryFn: ({ signal }) => api.dictionary(name, signal) });

export const useFeatureList = (name: string, analysis: string | undefined, q: FeatureQuery) =>
  useQuery({
    queryKey: keys.features(name, analysis ?? "", q),
    queryFn: ({ signal }) => api.features(name, analysis!, q, signal),
    enabled: !!analysis,
    placeholderData: keepPreviousData, // keep the table while the next page loads
  });

export const useFeature = (name: string, analysis: string, index: number | null) =>
  useQuery({
    queryKey: keys.feature(name, analysis, index ?? -1),
    queryFn: ({ signal }) => api.feature(name, analysis, index!, signal),
    enabled: index !== null,
  });

/** Annotations change under other tabs' hands: always fetched fresh when a page opens. */
export const useAnnotation = (name: string, index: number | null) =>
  useQuery({
    queryKey: keys.annotation(name, index ?? -1),
    queryFn: ({ signal }) => api.annotation(name, index!, signal),
    enabled: index !== null,
    staleTime: 0,
  });

export const useSimilar = (name: string, index: number, other: string | undefined) =>
  useQuery({
    queryKey: keys.similar(name, index, other),
    queryFn: ({ signal }) => api.similar(name, index, { dictionary: other, limit: 12 }, signal),
  });

/** Where a replacement model's feature sits and writes (only asked for replacement models). */
export const useReplacementFeature = (name: string, index: number, enabled: boolean) =>
  useQuery({
    queryKey: keys.replacementFeature(name, index),
    queryFn: ({ signal }) => api.replacementFeature(name, index, signal),
    enabled,
  });

export const useFeatureExplanations = (name: string, analysis: string, index: number) =>
  useQuery({
    queryKey: keys.explanations(name, analysis, index),
    queryFn: ({ signal }) => api.featureExplanations(name, analysis, index, signal),
    staleTime: 0,
  });

/** Poll every `ms` until the job has ended (done or failed). */
const untilEnded =
  (ms: number) =>
  (query: { state: { data?: { status: string } } }): number | false =>
    query.state.data && ["done", "failed"].includes(query.state.data.status) ? false : ms;

/** A job, polled until it is done or failed. */
export const useJob = (id: string | null) =>
  useQuery({
    queryKey: ["job", id ?? ""],
    queryFn: ({ signal }) => api.job(id!, signal),
    enabled: id !== null,
    staleTime: 0,
    refetchInterval: untilEnded(700),
  });

export const useComparison = (run: string | undefined, space: number, dictionaries: string[]) =>
  useQuery({
    queryKey: keys.compare(run, space, dictionaries),
    queryFn: ({ signal }) => api.compare(run !== undefined ? { run, space } : { dictionary: dictionaries }, signal),
    enabled: run !== undefined || dictionaries.length > 0,
    placeholderData: keepPreviousData,
  });

export const useRuns = () => useQuery({ queryKey: keys.runs, queryFn: ({ signal }) => api.runs(signal) });

/** A run still training is polled, so its curves grow on screen. */
export const useRun = (run: string) =>
  useQuery({
    queryKey: keys.run(run),
    queryFn: ({ signal }) => api.run(run, signal),
    staleTime: 0,
    refetchInterval: (query) => (query.state.data && !query.state.data.finished ? 10_000 : false),
  });

/** A replacement model's saved graphs (a finished job adds one). */
export const useGraphs = (name: string, enabled: boolean) =>
  useQuery({ queryKey: keys.graphs(name), queryFn: ({ signal }) => api.graphs(name, signal), enabled, staleTime: 0 });

export const useGraph = (name: string, slug: string) =>
  useQuery({ queryKey: keys.graph(name, slug), queryFn: ({ signal }) => api.graph(name, slug, signal), staleTime: 0 });

/** A graph job, polled until it is done or failed. */
export const useGraphJob = (id: string | null) =>
  useQuery({
    queryKey: ["graph-job", id ?? ""],
    queryFn: ({ signal }) => api.graphJob(id!, signal),
    enabled: id !== null,
    staleTime: 0,
    refetchInterval: untilEnded(500),
  });
