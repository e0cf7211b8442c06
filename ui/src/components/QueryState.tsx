import { ApiError, NetworkError } from "../api";

export function Loading({ label = "Loading…" }: { label?: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" />
      {label}
    </div>
  );
}

/** Turns any thrown error into one sentence a researcher can act on. */
export function errorText(error: unknown): { title: string; detail: string } {
  if (error instanceof NetworkError) return { title: "Server unreachable", detail: error.message };
  if (error instanceof ApiError) {
    const title =
      error.status === 404 ? "Not found" : error.status === 413 ? "Text too long" : error.status === 422 ? "Invalid request" : `Server error (HTTP ${error.status})`;
    return { title, detail: error.detail };
  }
  return { title: "Error", detail: error instanceof Error ? error.message : String(error) };
}

/** Worth retrying: the server was unreachable or failed, not "this does not exist". */
const retryable = (error: unknown) => !(error instanceof ApiError && error.status < 500);

export function ErrorMessage({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  const { title, detail } = errorText(error);
  return (
    <div className="error" role="alert">
      <strong>{title}:</strong> <span className="error-detail">{detail}</span>
      {onRetry && retryable(error) && (
        <button type="button" className="btn btn-small" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}
