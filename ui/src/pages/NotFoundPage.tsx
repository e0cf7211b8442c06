import { Link, useLocation } from "react-router";
import { useTitle } from "../useTitle";

export function NotFoundPage() {
  useTitle("Not found");
  const { pathname } = useLocation();
  return (
    <main className="page">
      <div className="error" role="alert">
        <strong>Not found:</strong> no page at <code>{pathname}</code>. <Link to="/">Back to the dictionaries</Link>.
      </div>
    </main>
  );
}
