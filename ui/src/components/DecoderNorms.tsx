import type { ReplacementFeature } from "../api";
import { fmt } from "../format";

/** Which layers a replacement model's feature writes to: the norm of its decoder vector into each target
 * layer's MLP output, as bars scaled to the largest. */
export function DecoderNorms({ place }: { place: ReplacementFeature }) {
  const largest = Math.max(...place.decoder_norms, 1e-12);
  return (
    <div className="decoder-norms" data-testid="decoder-norms">
      <p className="muted small">
        Reads the MLP input of layer {place.layer}; writes to {place.target_layers.length === 1 ? "the MLP output of layer " : "the MLP outputs of layers "}
        {place.target_layers.join(", ")}. Bars: the norm of its decoder vector into each.
      </p>
      <table className="data compact norm-table">
        <thead>
          <tr>
            <th className="num">Layer</th>
            <th>Decoder norm</th>
          </tr>
        </thead>
        <tbody>
          {place.target_layers.map((layer, i) => {
            const norm = place.decoder_norms[i];
            return (
              <tr key={layer} data-layer={layer}>
                <td className="num">{layer}</td>
                <td>
                  <span className="norm-bar" title={`decoder norm into layer ${layer}: ${norm}`}>
                    <span className="norm-bar-fill" style={{ width: `${(100 * norm) / largest}%` }} />
                    <span className="norm-bar-text">{fmt(norm, 3)}</span>
                  </span>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
