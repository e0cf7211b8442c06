import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useEffect, useId, useState } from "react";
import { api, conflictOf, type Annotation } from "../api";
import { keys, useAnnotation } from "../queries";
import { ErrorMessage, Loading } from "./QueryState";

interface Draft {
  label: string;
  notes: string;
  bookmarked: boolean;
}

const draftOf = (a: Annotation): Draft => ({ label: a.label, notes: a.notes, bookmarked: a.bookmarked });
const same = (a: Draft, b: Draft) => a.label === b.label && a.notes === b.notes && a.bookmarked === b.bookmarked;

/**
 * A feature's label, notes and bookmark. A save names the version it was based on; when another
 * tab or person saved meanwhile the server refuses it (409) and this shows both texts side by side,
 * so nothing is lost: keep yours (saved on top of theirs) or take theirs.
 */
export function AnnotationEditor({ dictionary, index }: { dictionary: string; index: number }) {
  const queryClient = useQueryClient();
  const saved = useAnnotation(dictionary, index);
  const [draft, setDraft] = useState<Draft | null>(null);
  const [base, setBase] = useState<Annotation | null>(null); // the saved annotation the draft started from
  const [conflict, setConflict] = useState<Annotation | null>(null);
  const labelId = useId();
  const notesId = useId();

  // A fresh annotation from the server replaces the draft only while the draft is unchanged.
  useEffect(() => {
    if (!saved.data) return;
    if (!base || !draft || same(draft, draftOf(base))) {
      setBase(saved.data);
      setDraft(draftOf(saved.data));
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [saved.data]);

  const save = useMutation({
    mutationFn: ({ edit, version }: { edit: Draft; version: number }) => api.saveAnnotation(dictionary, index, { ...edit, version }),
    onSuccess: (annotation) => {
      setConflict(null);
      setBase(annotation);
      setDraft(draftOf(annotation));
      queryClient.setQueryData(keys.annotation(dictionary, index), annotation);
      void queryClient.invalidateQueries({ queryKey: keys.featureLists(dictionary) });
      void queryClient.invalidateQueries({ queryKey: keys.labels(dictionary) });
    },
    onError: (error) => {
      const current = conflictOf(error);
      if (current) {
        setConflict(current);
        queryClient.setQueryData(keys.annotation(dictionary, index), current);
      }
    },
  });

  if (saved.isPending || !draft || !base) return <Loading label="Loading the label…" />;
  if (saved.isError) return <ErrorMessage error={saved.error} onRetry={() => saved.refetch()} />;
  const dirty = !same(draft, draftOf(base));
  const submit = (version: number) => save.mutate({ edit: draft, version });

  return (
    <form
      className="annotation-form"
      data-testid="annotation"
      onSubmit={(e) => {
        e.preventDefault();
        submit(base.version);
      }}
    >
      <label htmlFor={labelId} className="small muted">
        Label
      </label>
      <input
        id={labelId}
        type="text"
        maxLength={120}
        placeholder="a short name, e.g. “Python import statements”"
        value={draft.label}
        onChange={(e) => setDraft({ ...draft, label: e.target.value })}
      />
      <label htmlFor={notesId} className="small muted">
        Notes
      </label>
      <textarea id={notesId} maxLength={10000} placeholder="what it fires on, counter-examples, open questions…" value={draft.notes} onChange={(e) => setDraft({ ...draft, notes: e.target.value })} />
      <div className="text-form-controls">
        <label className="checkbox">
          <input type="checkbox" checked={draft.bookmarked} onChange={(e) => setDraft({ ...draft, bookmarked: e.target.checked })} /> ★ bookmark
        </label>
        <button type="submit" className="btn btn-primary" disabled={save.isPending || !dirty || !!conflict}>
          {save.isPending ? "Saving…" : "Save"}
        </button>
        <span className="muted small" data-testid="annotation-status">
          {dirty ? "unsaved changes" : base.version > 0 ? `saved (version ${base.version})` : "no label yet"}
        </span>
      </div>
      {save.isError && !conflict && <ErrorMessage error={save.error} />}
      {conflict && (
        <div className="conflict" role="alert" data-testid="annotation-conflict">
          <strong>Someone else saved this feature's label meanwhile</strong> (version {conflict.version}
          {conflict.updated_at ? `, ${new Date(conflict.updated_at).toLocaleString()}` : ""}); your edit was not saved and nothing was
          overwritten.
          <div>
            Their label: <q data-testid="conflict-label">{conflict.label}</q>
            {conflict.bookmarked ? " ★" : ""}
          </div>
          {conflict.notes && <pre>{conflict.notes}</pre>}
          <div className="text-form-controls">
            <button type="button" className="btn btn-primary" onClick={() => submit(conflict.version)}>
              Save mine over theirs
            </button>
            <button
              type="button"
              className="btn"
              onClick={() => {
                setBase(conflict);
                setDraft(draftOf(conflict));
                setConflict(null);
                save.reset();
              }}
            >
              Take theirs
            </button>
          </div>
        </div>
      )}
    </form>
  );
}
