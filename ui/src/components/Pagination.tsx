import { fmtInt } from "../format";

export interface PaginationProps {
  offset: number;
  limit: number;
  total: number;
  onOffset: (offset: number) => void;
  onLimit: (limit: number) => void;
}

export function Pagination({ offset, limit, total, onOffset, onLimit }: PaginationProps) {
  const page = Math.floor(offset / limit) + 1;
  const pages = Math.max(1, Math.ceil(total / limit));
  return (
    <div className="pagination">
      <button type="button" className="btn" disabled={offset <= 0} onClick={() => onOffset(0)} aria-label="First page">
        «
      </button>
      <button type="button" className="btn" disabled={offset <= 0} onClick={() => onOffset(Math.max(0, offset - limit))} aria-label="Previous page">
        ‹
      </button>
      <span className="page-info" data-testid="page-info">
        {total === 0 ? "no rows" : `${fmtInt(offset + 1)}–${fmtInt(Math.min(total, offset + limit))} of ${fmtInt(total)}`}
        <span className="muted"> · page {page}/{pages}</span>
      </span>
      <button type="button" className="btn" disabled={offset + limit >= total} onClick={() => onOffset(offset + limit)} aria-label="Next page">
        ›
      </button>
      <button type="button" className="btn" disabled={offset + limit >= total} onClick={() => onOffset((pages - 1) * limit)} aria-label="Last page">
        »
      </button>
      <label className="inline-field">
        rows
        <select value={limit} onChange={(e) => onLimit(Number(e.target.value))}>
          {[25, 50, 100, 200, 500].map((n) => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
      </label>
    </div>
  );
}
