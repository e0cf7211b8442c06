import { QueryClientProvider, type QueryClient } from "@tanstack/react-query";
import { useEffect } from "react";
import { Link, Route, Routes, useLocation } from "react-router";
import { ComparePage } from "./pages/ComparePage";
import { DictionariesPage } from "./pages/DictionariesPage";
import { DictionaryPage } from "./pages/DictionaryPage";
import { FeaturePage } from "./pages/FeaturePage";
import { GraphPage } from "./pages/GraphPage";
import { NotFoundPage } from "./pages/NotFoundPage";
import { RunPage } from "./pages/RunPage";
import { RunsPage } from "./pages/RunsPage";

export function AppRoutes() {
  return (
    <Routes>
      <Route path="/" element={<DictionariesPage />} />
      <Route path="/dictionaries/:name" element={<DictionaryPage />} />
      <Route path="/dictionaries/:name/analyses/:analysis/features/:index" element={<FeaturePage />} />
      <Route path="/dictionaries/:name/graphs/:slug" element={<GraphPage />} />
      <Route path="/runs" element={<RunsPage />} />
      <Route path="/runs/:run" element={<RunPage />} />
      <Route path="/compare" element={<ComparePage />} />
      <Route path="*" element={<NotFoundPage />} />
    </Routes>
  );
}

/** A new page starts at its top (links are often followed from far down a table). */
function ScrollToTop() {
  const { pathname } = useLocation();
  useEffect(() => {
    window.scrollTo(0, 0);
  }, [pathname]);
  return null;
}

/** The whole viewer, minus the router (BrowserRouter in main.tsx, MemoryRouter in tests). */
export function App({ queryClient }: { queryClient: QueryClient }) {
  return (
    <QueryClientProvider client={queryClient}>
      <div className="app">
        <header className="topbar">
          <Link to="/" className="brand">
            GPT-2 Dictionary
          </Link>
          <span className="muted small">feature viewer</span>
          <nav aria-label="Sections">
            <Link to="/">Dictionaries</Link>
            <Link to="/runs">Runs</Link>
          </nav>
        </header>
        <ScrollToTop />
        <AppRoutes />
      </div>
    </QueryClientProvider>
  );
}
