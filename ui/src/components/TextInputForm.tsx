import { useId, useState, type ReactNode } from "react";

export interface TextInputFormProps {
  label: string;
  placeholder: string;
  pending: boolean;
  onRun: (text: string) => void;
  initialText?: string;
  /** extra controls shown next to the Run button */
  children?: ReactNode;
}

/** A textarea with a Run button; Ctrl/⌘+Enter runs too. */
export function TextInputForm({ label, placeholder, pending, onRun, initialText = "", children }: TextInputFormProps) {
  const [text, setText] = useState(initialText);
  const id = useId();
  const run = () => {
    if (text.trim() && !pending) onRun(text);
  };
  return (
    <form
      className="text-form"
      onSubmit={(e) => {
        e.preventDefault();
        run();
      }}
    >
      <label htmlFor={id} className="sr-only">
        {label}
      </label>
      <textarea
        id={id}
        value={text}
        rows={3}
        placeholder={placeholder}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
            e.preventDefault();
            run();
          }
        }}
      />
      <div className="text-form-controls">
        <button type="submit" className="btn btn-primary" disabled={pending || !text.trim()}>
          {pending ? "Running…" : "Run"}
        </button>
        {children}
        <span className="muted hint">Ctrl+Enter to run. The first request loads the model, which can take a while.</span>
      </div>
    </form>
  );
}
