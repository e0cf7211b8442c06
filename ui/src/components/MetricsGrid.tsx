import type { Metrics } from "../api";
import { fmt, fmtInt, fmtPercent } from "../format";

type Kind = "percent" | "int" | "float";
const KNOWN: Record<string, { label: string; kind: Kind; title: string }> = {
  l0: { label: "L0", kind: "float", title: "mean number of active features per token" },
  explained_variance: { label: "Explained variance", kind: "percent", title: "fraction of activation variance the reconstruction explains" },
  ce_loss_recovered: { label: "CE loss recovered", kind: "percent", title: "(CE zero-ablation − CE reconstructed) / (CE zero-ablation − CE clean)" },
  mse: { label: "MSE", kind: "float", title: "mean squared reconstruction error" },
  ce_loss_clean: { label: "CE clean", kind: "float", title: "language-model loss without the dictionary" },
  ce_loss_reconstructed: { label: "CE reconstructed", kind: "float", title: "loss with the activation replaced by its reconstruction" },
  ce_loss_zero_ablation: { label: "CE zero-ablation", kind: "float", title: "loss with the activation set to zero" },
  kl_divergence: { label: "KL divergence", kind: "float", title: "KL(clean ‖ reconstructed) of next-token distributions" },
  unfired_features: { label: "Unfired (eval)", kind: "int", title: "features that never fired on the evaluation tokens (training logs count dead features separately)" },
  dead_features: { label: "Unfired (eval)", kind: "int", title: "features that never fired on the evaluation tokens (the name older dictionaries use)" },
  dense_features: { label: "Dense features", kind: "int", title: "features that fire on a large fraction of tokens" },
};

export function formatMetric(key: string, value: number | null | undefined): string {
  const kind = KNOWN[key]?.kind ?? "float";
  if (value === undefined || value === null) return "–";
  return kind === "percent" ? fmtPercent(value) : kind === "int" ? fmtInt(value) : fmt(value, 4);
}

const humanize = (key: string) => key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

/** Evaluation metrics: the known ones in a fixed order, then any others the server sends. */
export function MetricsGrid({ metrics }: { metrics: Metrics }) {
  const keys = [...Object.keys(KNOWN).filter((k) => k in metrics), ...Object.keys(metrics).filter((k) => !(k in KNOWN)).sort()];
  if (keys.length === 0) return <p className="muted">No evaluation metrics: this dictionary was saved without evaluation.</p>;
  return (
    <dl className="stat-grid" data-testid="metrics">
      {keys.map((k) => (
        <div key={k} className="stat" title={KNOWN[k]?.title ?? k}>
          <dt>{KNOWN[k]?.label ?? humanize(k)}</dt>
          <dd>{typeof metrics[k] === "number" || metrics[k] === null ? formatMetric(k, metrics[k] as number | null) : String(metrics[k])}</dd>
        </div>
      ))}
    </dl>
  );
}
